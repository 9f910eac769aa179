package wire

import (
	"bytes"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// The byte-exact examples of docs/wire-format.md, as the doc prints them.
const (
	exampleRequest = `
85 a1 76 01 a2 69 64 a5 72 65 71 2d 31 a4 6d 65
74 61 81 a4 75 73 65 72 a2 75 31 ab 64 65 61 64
6c 69 6e 65 5f 6d 73 cf 00 00 01 9b 76 da a8 00
a6 69 6e 70 75 74 73 81 a1 78 84 a4 6b 69 6e 64
a6 74 65 6e 73 6f 72 a5 64 74 79 70 65 a7 66 6c
6f 61 74 33 32 a5 73 68 61 70 65 91 02 a4 64 61
74 61 c4 08 00 00 80 3f 00 00 20 c0
`
	exampleResult = `
87 a1 76 01 a2 69 64 a5 72 65 71 2d 31 a5 6d 6f
64 65 6c 82 a4 6e 61 6d 65 a3 6d 6c 70 a7 76 65
72 73 69 6f 6e a1 31 aa 74 69 6d 69 6e 67 73 5f
6d 73 82 a8 71 75 65 75 65 5f 6d 73 cb 3f f8 00
00 00 00 00 00 a8 69 6e 66 65 72 5f 6d 73 cb 3f
e8 00 00 00 00 00 00 a6 77 6f 72 6b 65 72 a3 77
2d 31 a4 6d 65 74 61 81 a4 75 73 65 72 a2 75 31
a7 6f 75 74 70 75 74 73 81 a1 79 84 a4 6b 69 6e
64 a6 74 65 6e 73 6f 72 a5 64 74 79 70 65 a7 66
6c 6f 61 74 33 32 a5 73 68 61 70 65 91 01 a4 64
61 74 61 c4 04 00 00 80 3e
`
)

func fromHex(t *testing.T, text string) []byte {
	t.Helper()
	data, err := hex.DecodeString(strings.Join(strings.Fields(text), ""))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func float32Tensor(t *testing.T, shape []int, values ...float32) Tensor {
	t.Helper()
	tensor, err := Float32(shape, values)
	if err != nil {
		t.Fatal(err)
	}
	return tensor
}

func TestRequestExampleByteForByte(t *testing.T) {
	want := fromHex(t, exampleRequest)
	if len(want) != 108 {
		t.Fatalf("the example is %d bytes, the doc says 108", len(want))
	}
	request := Request{
		ID:       "req-1",
		Meta:     map[string]any{"user": "u1"},
		Deadline: time.UnixMilli(1767225600000),
		Inputs:   map[string]Tensor{"x": float32Tensor(t, []int{2}, 1.0, -2.5)},
	}
	if err := request.Validate(); err != nil {
		t.Fatal(err)
	}
	got, err := request.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("encoded\n%s\nthe doc's example\n%s", hex.Dump(got), hex.Dump(want))
	}
	if id, ok := RequestID(want); id != "req-1" || !ok {
		t.Fatalf("RequestID = %q, %v", id, ok)
	}
}

// ordered is a msgpack map written in the order of its pairs.
type ordered []struct {
	key   string
	value any
}

func (o ordered) EncodeMsgpack(enc *msgpack.Encoder) error {
	if err := enc.EncodeMapLen(len(o)); err != nil {
		return err
	}
	for _, pair := range o {
		if err := enc.EncodeString(pair.key); err != nil {
			return err
		}
		if err := enc.Encode(pair.value); err != nil {
			return err
		}
	}
	return nil
}

func TestResultExampleByteForByte(t *testing.T) {
	data := fromHex(t, exampleResult)
	result, err := DecodeResult(data)
	if err != nil {
		t.Fatal(err)
	}
	want := Result{
		ID:        "req-1",
		Outputs:   map[string]Tensor{"y": float32Tensor(t, []int{1}, 0.25)},
		Model:     Model{Name: "mlp", Version: "1"},
		TimingsMS: map[string]float64{"queue_ms": 1.5, "infer_ms": 0.75},
		Worker:    "w-1",
		Meta:      map[string]any{"user": "u1"},
	}
	if !reflect.DeepEqual(result, want) {
		t.Fatalf("decoded %+v\nwant %+v", result, want)
	}
	// Every byte was read into the Result: written back in the doc's key
	// order (a Go map has none), its values give the same bytes.
	y := result.Outputs["y"]
	rebuilt := ordered{
		{"v", Version},
		{"id", result.ID},
		{"model", ordered{{"name", result.Model.Name}, {"version", result.Model.Version}}},
		{"timings_ms", ordered{
			{"queue_ms", result.TimingsMS["queue_ms"]}, {"infer_ms", result.TimingsMS["infer_ms"]},
		}},
		{"worker", result.Worker},
		{"meta", result.Meta},
		{"outputs", tensors{"y": {Kind: "tensor", Dtype: y.Dtype, Shape: y.Shape, Data: y.Data}}},
	}
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	if err := enc.Encode(rebuilt); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), data) {
		t.Fatalf("rebuilt\n%s\nthe doc's example\n%s", hex.Dump(buf.Bytes()), hex.Dump(data))
	}
	if values, err := y.Float32s(); err != nil || !reflect.DeepEqual(values, []float32{0.25}) {
		t.Fatalf("Float32s = %v, %v", values, err)
	}
}

// The examples above are the doc's own, where the doc is at hand (this
// folder inside the torchkafka repository).
func TestExamplesAreTheDocs(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "..", "docs", "wire-format.md"))
	if errors.Is(err, os.ErrNotExist) {
		t.Skip("docs/wire-format.md is not two folders above this module")
	}
	if err != nil {
		t.Fatal(err)
	}
	for marker, example := range map[string]string{
		"example-request": exampleRequest, "example-result": exampleResult,
	} {
		block := regexp.MustCompile("(?s)<!-- " + marker + " -->\n```\n(.*?)```").FindSubmatch(doc)
		if block == nil {
			t.Fatalf("no %s block in the doc", marker)
		}
		if !bytes.Equal(fromHex(t, string(block[1])), fromHex(t, example)) {
			t.Errorf("the doc's %s is not the one in this test:\n%s", marker, block[1])
		}
	}
}

func encode(t *testing.T, value any) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	enc.SetSortMapKeys(true)
	if err := enc.Encode(value); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func resultMap() map[string]any {
	return map[string]any{
		"v": 1, "id": "r", "model": map[string]any{"name": "m", "version": "2"},
		"outputs": map[string]any{"y": map[string]any{
			"kind": "tensor", "dtype": "int16", "shape": []int{2, 0}, "data": []byte{},
		}},
	}
}

func TestDecodeResultInAnyOrderWithUnknownKeys(t *testing.T) {
	value := resultMap()
	value["future_field"] = []any{1, "two"} // readers ignore keys they do not know
	value["timings_ms"] = map[string]any{"total_ms": 3}
	result, err := DecodeResult(encode(t, value)) // keys sorted: not the worker's order
	if err != nil {
		t.Fatal(err)
	}
	y := result.Outputs["y"]
	if result.ID != "r" || result.Model.Version != "2" || y.Dtype != "int16" ||
		!reflect.DeepEqual(y.Shape, []int{2, 0}) || result.TimingsMS["total_ms"] != 3 {
		t.Fatalf("decoded %+v", result)
	}
}

func TestDecodeResultRefuses(t *testing.T) {
	for name, change := range map[string]func(map[string]any){
		"no version":       func(m map[string]any) { delete(m, "v") },
		"version 2":        func(m map[string]any) { m["v"] = 2 },
		"version string":   func(m map[string]any) { m["v"] = "1" },
		"version float":    func(m map[string]any) { m["v"] = 1.0 },
		"no id":            func(m map[string]any) { delete(m, "id") },
		"no outputs":       func(m map[string]any) { delete(m, "outputs") },
		"an image output":  func(m map[string]any) { m["outputs"] = map[string]any{"y": map[string]any{"kind": "image"}} },
		"short data":       func(m map[string]any) { m["outputs"].(map[string]any)["y"].(map[string]any)["shape"] = []int{2} },
		"an unknown dtype": func(m map[string]any) { m["outputs"].(map[string]any)["y"].(map[string]any)["dtype"] = "int4" },
	} {
		value := resultMap()
		change(value)
		if _, err := DecodeResult(encode(t, value)); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	trailing := append(encode(t, resultMap()), 0xc0)
	if _, err := DecodeResult(trailing); err == nil {
		t.Error("a trailing byte: decoded")
	}
}

func TestEncodeOptionalFields(t *testing.T) {
	scalar := Tensor{Dtype: "bool", Data: []byte{1}}
	for _, c := range []struct {
		meta any
		want string
	}{
		{nil, "83a17601a26964a172a6696e7075747381"},               // no meta key at all
		{false, "84a17601a26964a172a46d657461c2a6696e7075747381"}, // false is a meta
	} {
		got, err := Request{ID: "r", Meta: c.meta, Inputs: map[string]Tensor{"b": scalar}}.Encode()
		if err != nil {
			t.Fatal(err)
		}
		input := "a162" + "84a46b696e64a674656e736f72a56474797065a4626f6f6ca5736861706590a464617461c40101"
		if hex.EncodeToString(got) != c.want+input {
			t.Errorf("meta %v: %x", c.meta, got)
		}
	}
}

func TestEncodeAnEmptyTensor(t *testing.T) {
	got, err := Request{ID: "r", Inputs: map[string]Tensor{"e": {Dtype: "int8", Shape: []int{0}}}}.Encode()
	if err != nil {
		t.Fatal(err)
	}
	// data is an empty bin (c4 00), not nil (c0): nil is a missing field.
	want := "83a17601a26964a172a6696e7075747381a165" +
		"84a46b696e64a674656e736f72a56474797065a4696e7438a5736861706591" + "00" + "a464617461c400"
	if hex.EncodeToString(got) != want {
		t.Fatalf("%x", got)
	}
}

func TestValidate(t *testing.T) {
	x := float32Tensor(t, []int{2, 2}, 1, 2, 3, 4)
	with := func(tensor Tensor) Request { return Request{ID: "r", Inputs: map[string]Tensor{"x": tensor}} }
	tooMany := map[string]Tensor{}
	for _, name := range strings.Split("abcdefghijklmnopq", "") {
		tooMany[name] = x
	}
	for _, c := range []struct {
		request Request
		reason  string
		path    string
	}{
		{with(x), "", ""},
		{with(Tensor{Dtype: "uint8", Shape: []int{0, 1 << 30}}), ReasonTooManyElements, "$.inputs['x'].shape"},
		{with(Tensor{Dtype: "float32", Shape: []int{2, -2}}), ReasonInvalidShape, "$.inputs['x'].shape[1]"},
		{with(Tensor{Dtype: "float32", Shape: []int{2}, Data: x.Data}), ReasonPayloadSizeMismatch, "$.inputs['x'].data"},
		{with(Tensor{Dtype: "complex64", Data: x.Data}), ReasonUnsupportedDtype, "$.inputs['x'].dtype"},
		{with(Tensor{Dtype: "int8", Shape: make([]int, 9)}), ReasonTooManyDims, "$.inputs['x'].shape"},
		{with(Tensor{Dtype: "bool", Shape: []int{2}, Data: []byte{1, 2}}), ReasonInvalidField, "$.inputs['x'].data"},
		{Request{ID: strings.Repeat("é", 129), Inputs: map[string]Tensor{"x": x}}, ReasonIDTooLong, "$.id"},
		{Request{ID: "", Inputs: map[string]Tensor{"x": x}}, ReasonInvalidField, "$.id"},
		{Request{ID: "r"}, ReasonInvalidField, "$.inputs"},
		{Request{ID: "r", Inputs: tooMany}, ReasonTooManyInputs, "$.inputs"},
		{Request{ID: "r", Inputs: map[string]Tensor{"": x}}, ReasonInvalidField, "$.inputs"},
		{Request{ID: "r", Inputs: map[string]Tensor{"\xff": x}}, ReasonMalformedMsgpack, "$.inputs"},
		{Request{ID: "r\xff", Inputs: map[string]Tensor{"x": x}}, ReasonMalformedMsgpack, "$.id"},
		{Request{ID: "r", Inputs: map[string]Tensor{"x": x}, Deadline: time.UnixMilli(-1)}, ReasonInvalidField, "$.deadline_ms"},
	} {
		err := c.request.Validate()
		var bad *Invalid
		if c.reason == "" {
			if err != nil {
				t.Errorf("%+v: %v", c.request, err)
			}
		} else if !errors.As(err, &bad) || bad.Reason != c.reason || bad.Path != c.path {
			t.Errorf("%+v: %v, want %s at %s", c.request, err, c.reason, c.path)
		}
	}
}

func TestReadDeadLetter(t *testing.T) {
	headers := []Header{
		{"trace", []byte("kept")},
		{HeaderReason, []byte("invalid_shape")},
		{HeaderError, []byte("$.inputs['x'].shape[0]: a dimension must be a non-negative integer, got -2")},
		{HeaderSourceTopic, []byte("requests")},
		{HeaderSourcePartition, []byte("3")},
		{HeaderSourceOffset, []byte("12345678901")},
		{HeaderAttempts, []byte("1")},
		{HeaderWorker, []byte("host-1-w0")},
		{HeaderTimeMS, []byte("1767225600000")},
	}
	dl, err := ReadDeadLetter(headers)
	if err != nil {
		t.Fatal(err)
	}
	want := DeadLetter{
		Reason: "invalid_shape", Error: string(headers[2].Value), SourceTopic: "requests",
		SourcePartition: 3, SourceOffset: 12345678901, Attempts: 1, Worker: "host-1-w0",
		Time: time.UnixMilli(1767225600000),
	}
	if !reflect.DeepEqual(dl, want) {
		t.Fatalf("read %+v\nwant %+v", dl, want)
	}
	if _, err := ReadDeadLetter(headers[:1]); err == nil {
		t.Error("no reason: read")
	}
	if _, err := ReadDeadLetter(append(headers, Header{HeaderAttempts, []byte("two")})); err == nil {
		t.Error("attempts not a number: read")
	}
}
