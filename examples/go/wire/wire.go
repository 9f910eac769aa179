// Package wire writes and reads torchkafka's wire format, version 1
// (docs/wire-format.md in the torchkafka repository): the request envelope a
// client writes to the input topic, the result envelope it reads from the
// output topic, and the torchkafka.* headers of a dead letter.
//
// Every message value is one msgpack map. Only tensor inputs are written
// here; the format's image inputs are left out.
package wire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/vmihailenco/msgpack/v5"
)

// Version is the format version, the envelope's "v".
const Version = 1

// A worker's default limits on a request (a deployment may change them).
const (
	MaxIDBytes  = 256     // bytes of UTF-8 in an id
	MaxInputs   = 16      // named inputs in a request
	MaxDims     = 8       // dimensions of a tensor
	MaxElements = 1 << 26 // elements of a tensor, its zero dimensions left out
)

// Dead-letter reason codes that Request.Validate reports. A dead letter may
// carry others (model_error, expired, ...): docs/wire-format.md lists them.
const (
	ReasonMalformedMsgpack    = "malformed_msgpack"
	ReasonInvalidField        = "invalid_field"
	ReasonUnsupportedDtype    = "unsupported_dtype"
	ReasonInvalidShape        = "invalid_shape"
	ReasonPayloadSizeMismatch = "payload_size_mismatch"
	ReasonIDTooLong           = "id_too_long"
	ReasonTooManyInputs       = "too_many_inputs"
	ReasonTooManyDims         = "too_many_dims"
	ReasonTooManyElements     = "too_many_elements"
)

// itemSizes maps each dtype of the format to the bytes of one element.
var itemSizes = map[string]int{
	"bool": 1, "uint8": 1, "int8": 1, "int16": 2, "int32": 4, "int64": 8,
	"float16": 2, "bfloat16": 2, "float32": 4, "float64": 8,
}

// ItemSize is the size in bytes of one element of dtype, or 0 for a name the
// format does not have.
func ItemSize(dtype string) int { return itemSizes[dtype] }

// Tensor is a dense array: Data holds its elements little-endian, in C
// (row-major) order.
type Tensor struct {
	Dtype string
	Shape []int // nil or empty: a scalar
	Data  []byte
}

// Float32 is a float32 tensor of shape holding values.
func Float32(shape []int, values []float32) (Tensor, error) {
	t := Tensor{Dtype: "float32", Shape: slices.Clone(shape)}
	if n := t.Elements(); n != len(values) {
		return Tensor{}, fmt.Errorf("shape %v holds %d elements, got %d values", shape, n, len(values))
	}
	t.Data = make([]byte, 4*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint32(t.Data[4*i:], math.Float32bits(v))
	}
	return t, nil
}

// Elements is the product of the dimensions (1 for a scalar).
func (t Tensor) Elements() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Float32s is the elements of a float32 tensor.
func (t Tensor) Float32s() ([]float32, error) {
	if t.Dtype != "float32" {
		return nil, fmt.Errorf("a %s tensor, not float32", t.Dtype)
	}
	if len(t.Data) != 4*t.Elements() {
		return nil, fmt.Errorf("%d bytes for float32 %v", len(t.Data), t.Shape)
	}
	values := make([]float32, len(t.Data)/4)
	for i := range values {
		values[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
	}
	return values, nil
}

// Invalid is a request that a worker dead-letters: Reason is the reason code
// its dead letter carries, Path the field ("$" is the envelope).
type Invalid struct {
	Reason string
	Path   string
	Detail string
}

func (e *Invalid) Error() string { return fmt.Sprintf("%s: %s (%s)", e.Path, e.Detail, e.Reason) }

func invalid(reason, path, format string, args ...any) *Invalid {
	return &Invalid{reason, path, fmt.Sprintf(format, args...)}
}

// check reports what the format refuses in t, at path (the tensor's place).
func (t Tensor) check(path string) error {
	size := ItemSize(t.Dtype)
	if size == 0 {
		return invalid(ReasonUnsupportedDtype, path+".dtype", "dtype %q is not in the format", t.Dtype)
	}
	if len(t.Shape) > MaxDims {
		return invalid(ReasonTooManyDims, path+".shape", "%d dimensions, the limit is %d", len(t.Shape), MaxDims)
	}
	elements, extent := 1, 1 // extent: the product of the non-zero dimensions
	for i, d := range t.Shape {
		if d < 0 {
			return invalid(ReasonInvalidShape, fmt.Sprintf("%s.shape[%d]", path, i),
				"a dimension must be a non-negative integer, got %d", d)
		}
		if max(d, 1) > MaxElements/extent {
			return invalid(ReasonTooManyElements, path+".shape", "%v spans over %d elements", t.Shape, MaxElements)
		}
		elements *= d
		extent *= max(d, 1)
	}
	if want := elements * size; len(t.Data) != want {
		return invalid(ReasonPayloadSizeMismatch, path+".data",
			"%d bytes, but %s %v needs %d", len(t.Data), t.Dtype, t.Shape, want)
	}
	if t.Dtype == "bool" && slices.ContainsFunc(t.Data, func(b byte) bool { return b > 1 }) {
		return invalid(ReasonInvalidField, path+".data", "bool bytes must be 0x00 or 0x01")
	}
	return nil
}

// Request is one inference request.
type Request struct {
	ID       string            // the idempotency key: 1 to MaxIDBytes bytes of UTF-8
	Inputs   map[string]Tensor // 1 to MaxInputs named inputs
	Meta     any               // optional (nil: none); echoed unchanged in the result
	Deadline time.Time         // optional (zero: none); not worth running after it
}

// Validate is nil for a request that a worker decodes, else an *Invalid with
// the reason code of its dead letter (for the default limits).
func (r Request) Validate() error {
	switch {
	case r.ID == "":
		return invalid(ReasonInvalidField, "$.id", "must not be empty")
	case !utf8.ValidString(r.ID):
		return invalid(ReasonMalformedMsgpack, "$.id", "not UTF-8")
	case len(r.ID) > MaxIDBytes:
		return invalid(ReasonIDTooLong, "$.id", "%d bytes, the limit is %d", len(r.ID), MaxIDBytes)
	case len(r.Inputs) == 0:
		return invalid(ReasonInvalidField, "$.inputs", "a request needs at least one input")
	case len(r.Inputs) > MaxInputs:
		return invalid(ReasonTooManyInputs, "$.inputs", "%d inputs, the limit is %d", len(r.Inputs), MaxInputs)
	case !r.Deadline.IsZero() && r.Deadline.UnixMilli() < 0:
		return invalid(ReasonInvalidField, "$.deadline_ms", "must be >= 0 (ms since the epoch)")
	}
	for _, name := range slices.Sorted(maps.Keys(r.Inputs)) {
		if name == "" {
			return invalid(ReasonInvalidField, "$.inputs", "names must be non-empty strings")
		}
		if !utf8.ValidString(name) {
			return invalid(ReasonMalformedMsgpack, "$.inputs", "name %q is not UTF-8", name)
		}
		if err := r.Inputs[name].check(fmt.Sprintf("$.inputs['%s']", name)); err != nil {
			return err
		}
	}
	return nil
}

// The wire maps. Struct fields are written in their order, maps with sorted
// keys, integers in their shortest form: the layout of the doc's examples.
type requestWire struct {
	V          int     `msgpack:"v"`
	ID         string  `msgpack:"id"`
	Meta       *any    `msgpack:"meta,omitempty"`
	DeadlineMS *int64  `msgpack:"deadline_ms,omitempty"`
	Inputs     tensors `msgpack:"inputs"`
}

type tensorWire struct {
	Kind  string `msgpack:"kind"`
	Dtype string `msgpack:"dtype"`
	Shape []int  `msgpack:"shape"`
	Data  []byte `msgpack:"data"`
}

type tensors map[string]tensorWire

// EncodeMsgpack writes the map with its names sorted.
func (ts tensors) EncodeMsgpack(enc *msgpack.Encoder) error {
	if err := enc.EncodeMapLen(len(ts)); err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(ts)) {
		if err := enc.EncodeString(name); err != nil {
			return err
		}
		if err := enc.Encode(ts[name]); err != nil {
			return err
		}
	}
	return nil
}

// Encode is the request's wire bytes. It does not validate the request (a
// request that Validate refuses is written as it is, and dead-lettered).
func (r Request) Encode() ([]byte, error) {
	w := requestWire{V: Version, ID: r.ID, Inputs: make(tensors, len(r.Inputs))}
	if r.Meta != nil {
		w.Meta = &r.Meta
	}
	if !r.Deadline.IsZero() {
		ms := r.Deadline.UnixMilli()
		w.DeadlineMS = &ms
	}
	for name, t := range r.Inputs {
		// A nil slice would be msgpack nil: a scalar's shape is [], and
		// an empty tensor's data an empty bin.
		shape, data := t.Shape, t.Data
		if shape == nil {
			shape = []int{}
		}
		if data == nil {
			data = []byte{}
		}
		w.Inputs[name] = tensorWire{Kind: "tensor", Dtype: t.Dtype, Shape: shape, Data: data}
	}
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	enc.SetSortMapKeys(true) // of maps in Meta
	if err := enc.Encode(&w); err != nil {
		return nil, fmt.Errorf("encoding request %q: %w", r.ID, err)
	}
	return buf.Bytes(), nil
}

// Model names the model that produced a result.
type Model struct {
	Name    string `msgpack:"name"`
	Version string `msgpack:"version"`
}

// Result is the outcome of one request, read from the output topic.
type Result struct {
	ID        string
	Outputs   map[string]Tensor
	Model     Model
	TimingsMS map[string]float64 // stage durations in milliseconds, e.g. "total_ms"
	Worker    string             // the worker process that produced it
	Meta      any                // the request's Meta (maps as map[string]any, integers as int64 or uint64)
}

type resultWire struct {
	ID        string                `msgpack:"id"`
	Outputs   map[string]tensorWire `msgpack:"outputs"`
	Model     Model                 `msgpack:"model"`
	TimingsMS map[string]float64    `msgpack:"timings_ms"`
	Worker    string                `msgpack:"worker"`
	Meta      any                   `msgpack:"meta"`
}

// DecodeResult reads a result envelope. Keys it does not know are skipped.
func DecodeResult(data []byte) (Result, error) {
	var head struct {
		V any `msgpack:"v"`
	}
	if err := unmarshal(data, &head); err != nil {
		return Result{}, fmt.Errorf("not a msgpack map: %w", err)
	}
	if head.V != int64(Version) && head.V != uint64(Version) {
		return Result{}, fmt.Errorf("$.v: version %v; this reader knows %d", head.V, Version)
	}
	var w resultWire
	if err := unmarshal(data, &w); err != nil {
		return Result{}, err
	}
	if w.ID == "" {
		return Result{}, errors.New("$.id: missing or empty")
	}
	if w.Outputs == nil {
		return Result{}, errors.New("$.outputs: missing")
	}
	result := Result{
		ID: w.ID, Outputs: make(map[string]Tensor, len(w.Outputs)), Model: w.Model,
		TimingsMS: w.TimingsMS, Worker: w.Worker, Meta: w.Meta,
	}
	for name, tw := range w.Outputs {
		path := fmt.Sprintf("$.outputs['%s']", name)
		if tw.Kind != "tensor" {
			return Result{}, fmt.Errorf("%s.kind: %q, not a tensor", path, tw.Kind)
		}
		t := Tensor{Dtype: tw.Dtype, Shape: tw.Shape, Data: tw.Data}
		if err := t.check(path); err != nil {
			return Result{}, err
		}
		result.Outputs[name] = t
	}
	return result, nil
}

// RequestID is the "id" of a message's top-level map, whatever else is wrong
// with it (a dead letter's value is its request), and whether there is one.
func RequestID(value []byte) (string, bool) {
	var head struct {
		ID any `msgpack:"id"`
	}
	if unmarshal(value, &head) != nil {
		return "", false
	}
	id, ok := head.ID.(string)
	return id, ok && id != ""
}

// unmarshal decodes data, which must be exactly one msgpack value, into v.
func unmarshal(data []byte, v any) error {
	r := bytes.NewReader(data)
	dec := msgpack.NewDecoder(r)
	dec.UseLooseInterfaceDecoding(true) // integers in `any` as int64/uint64
	if err := dec.Decode(v); err != nil {
		return err
	}
	if r.Len() > 0 {
		return fmt.Errorf("%d bytes after the msgpack value", r.Len())
	}
	return nil
}

// Header is a Kafka record header (a kgo.RecordHeader converts to it).
type Header struct {
	Key   string
	Value []byte
}

// The headers a worker adds to a dead letter.
const (
	HeaderReason          = "torchkafka.reason"
	HeaderError           = "torchkafka.error"
	HeaderSourceTopic     = "torchkafka.source.topic"
	HeaderSourcePartition = "torchkafka.source.partition"
	HeaderSourceOffset    = "torchkafka.source.offset"
	HeaderAttempts        = "torchkafka.attempts"
	HeaderWorker          = "torchkafka.worker"
	HeaderTimeMS          = "torchkafka.time_ms"
)

// DeadLetter is why and where a request failed, from its dead letter's headers.
type DeadLetter struct {
	Reason          string // a reason code, e.g. payload_size_mismatch
	Error           string // a human-readable message naming the field
	SourceTopic     string
	SourcePartition int32
	SourceOffset    int64
	Attempts        int
	Worker          string
	Time            time.Time
}

// ReadDeadLetter reads a dead letter's torchkafka.* headers. The reason is
// required; a numeric header, where present, must be a decimal integer.
func ReadDeadLetter(headers []Header) (DeadLetter, error) {
	values := make(map[string]string, len(headers))
	for _, h := range headers {
		values[h.Key] = string(h.Value)
	}
	dl := DeadLetter{
		Reason:      values[HeaderReason],
		Error:       values[HeaderError],
		SourceTopic: values[HeaderSourceTopic],
		Worker:      values[HeaderWorker],
	}
	if dl.Reason == "" {
		return DeadLetter{}, fmt.Errorf("no %s header", HeaderReason)
	}
	var partition, attempts, timeMS int64
	for key, into := range map[string]*int64{
		HeaderSourcePartition: &partition, HeaderSourceOffset: &dl.SourceOffset,
		HeaderAttempts: &attempts, HeaderTimeMS: &timeMS,
	} {
		text, ok := values[key]
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(text, 10, 64)
		if err != nil {
			return DeadLetter{}, fmt.Errorf("header %s: %w", key, err)
		}
		*into = n
	}
	dl.SourcePartition, dl.Attempts = int32(partition), int(attempts)
	if timeMS != 0 {
		dl.Time = time.UnixMilli(timeMS)
	}
	return dl, nil
}
