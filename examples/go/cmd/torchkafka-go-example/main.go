// Command torchkafka-go-example sends requests to a torchkafka worker and
// waits for each one's outcome: its result on the output topic, or its dead
// letter.
//
//	torchkafka-go-example -input requests -output results -dead-letters requests.dlq -count 3 -bad
//
// It sends -count float32 tensors of -shape as input -input-name (plus, with
// -bad, one whose data is 4 bytes too long, which the worker must
// dead-letter as payload_size_mismatch), each keyed by its id, and reads the
// output and dead-letter topics from the end offsets they had before it sent
// anything (by assignment, no consumer group). It prints one line per
// request:
//
//	result ID NAME=DTYPE[SHAPE] ... model=NAME version=VERSION worker=WORKER
//	dead-letter ID reason=REASON error="..."
//	bad-result ID error="..."       (a result that does not decode)
//	bad-dead-letter ID error="..."  (a dead letter without its reason)
//	missing ID                      (nothing within -timeout)
//
// It exits 1 when a request is missing or got an outcome it should not have
// (a dead letter for a valid request, a result for the bad one), 2 when it
// could not run.
package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"torchkafka/examples/go/wire"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	code, err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "torchkafka-go-example:", err)
	}
	os.Exit(code)
}

type config struct {
	seeds                      []string
	input, output, deadLetters string
	count                      int
	bad                        bool
	inputName, idPrefix        string
	shape                      []int
	deadline, timeout          time.Duration
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	fs := flag.NewFlagSet("torchkafka-go-example", flag.ContinueOnError)
	fs.SetOutput(stderr)
	bootstrap := fs.String("bootstrap", cmp.Or(os.Getenv("KAFKA_BOOTSTRAP"), "127.0.0.1:9092"),
		"Kafka bootstrap servers, comma-separated (default: $KAFKA_BOOTSTRAP or 127.0.0.1:9092)")
	var c config
	fs.StringVar(&c.input, "input", "", "input topic (required)")
	fs.StringVar(&c.output, "output", "", "output topic (required)")
	fs.StringVar(&c.deadLetters, "dead-letters", "", "dead-letter topic (required)")
	fs.IntVar(&c.count, "count", 3, "how many valid requests to send")
	fs.BoolVar(&c.bad, "bad", false, "also send one request that the worker must dead-letter (payload_size_mismatch)")
	fs.StringVar(&c.inputName, "input-name", "x", "the input the model reads (the worker's --input-name)")
	shape := fs.String("shape", "4", "shape of each request's float32 tensor, comma-separated, e.g. 3,224,224")
	fs.DurationVar(&c.deadline, "deadline", 0, "give each request a deadline this far ahead (0: none)")
	fs.DurationVar(&c.timeout, "timeout", 30*time.Second, "how long to wait for the outcomes once sent")
	fs.StringVar(&c.idPrefix, "id-prefix", "", "request ids are PREFIX0, PREFIX1, ... (default: go-RANDOM-)")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if c.input == "" || c.output == "" || c.deadLetters == "" {
		return c, errors.New("-input, -output and -dead-letters are required")
	}
	if c.count < 0 || (c.count == 0 && !c.bad) {
		return c, errors.New("nothing to send: -count must be positive (or 0 with -bad)")
	}
	c.seeds = strings.Split(*bootstrap, ",")
	for _, dim := range strings.Split(*shape, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(dim))
		if err != nil {
			return c, fmt.Errorf("-shape %q: %w", *shape, err)
		}
		c.shape = append(c.shape, n)
	}
	if c.idPrefix == "" {
		// A new prefix each run: the worker answers an id only once.
		c.idPrefix = "go-" + strings.ToLower(rand.Text()[:8]) + "-"
	}
	return c, nil
}

// requests are the requests to send, and for each id the dead-letter reason
// it must get ("" for a result).
func requests(c config) ([]wire.Request, map[string]string, error) {
	var sent []wire.Request
	want := map[string]string{}
	elements := wire.Tensor{Shape: c.shape}.Elements()
	for i := range c.count {
		values := make([]float32, elements)
		for j := range values {
			values[j] = float32(i) + float32(j%4)/4
		}
		tensor, err := wire.Float32(c.shape, values)
		if err != nil {
			return nil, nil, err
		}
		request := wire.Request{
			ID:     c.idPrefix + strconv.Itoa(i),
			Inputs: map[string]wire.Tensor{c.inputName: tensor},
			Meta:   map[string]any{"client": "torchkafka-go-example", "n": i},
		}
		if c.deadline > 0 {
			request.Deadline = time.Now().Add(c.deadline)
		}
		if err := request.Validate(); err != nil {
			return nil, nil, err
		}
		sent = append(sent, request)
		want[request.ID] = ""
	}
	if c.bad {
		tensor, err := wire.Float32(c.shape, make([]float32, elements))
		if err != nil {
			return nil, nil, err
		}
		tensor.Data = append(tensor.Data, 0, 0, 0, 0) // one float32 more than the shape holds
		request := wire.Request{ID: c.idPrefix + "bad", Inputs: map[string]wire.Tensor{c.inputName: tensor}}
		var invalid *wire.Invalid
		if !errors.As(request.Validate(), &invalid) {
			return nil, nil, errors.New("the bad request validates")
		}
		sent = append(sent, request)
		want[request.ID] = invalid.Reason
	}
	return sent, want, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (int, error) {
	c, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0, nil
	}
	if err != nil {
		return 2, err
	}
	sent, want, err := requests(c)
	if err != nil {
		return 2, err
	}

	producer, err := kgo.NewClient(kgo.SeedBrokers(c.seeds...), kgo.RecordPartitioner(librdkafkaPartitioner()))
	if err != nil {
		return 2, err
	}
	defer producer.Close()
	setup, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	// Where the outcomes will be: after the topics' current ends. Taken
	// before sending, so no outcome can come before the consumer's start.
	ends, err := kadm.NewClient(producer).ListEndOffsets(setup, c.output, c.deadLetters)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		return 2, fmt.Errorf("listing the end offsets of %s and %s: %w", c.output, c.deadLetters, err)
	}
	consumer, err := kgo.NewClient(
		kgo.SeedBrokers(c.seeds...),
		kgo.ConsumePartitions(ends.KOffsets()),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), // an exactly-once worker writes in transactions
	)
	if err != nil {
		return 2, err
	}
	defer consumer.Close()

	records := make([]*kgo.Record, 0, len(sent))
	for _, request := range sent {
		value, err := request.Encode()
		if err != nil {
			return 2, err
		}
		// Keyed by id: every copy of a request goes to the same partition.
		records = append(records, &kgo.Record{Topic: c.input, Key: []byte(request.ID), Value: value})
	}
	if err := producer.ProduceSync(setup, records...).FirstErr(); err != nil {
		return 2, fmt.Errorf("sending to %s: %w", c.input, err)
	}
	fmt.Fprintf(stderr, "sent %d requests to %s (ids %s...); waiting up to %s\n",
		len(records), c.input, c.idPrefix, c.timeout)

	w := waiter{output: c.output, deadLetters: c.deadLetters, pending: want, out: stdout, errs: stderr}
	wait, cancelWait := context.WithTimeout(ctx, c.timeout)
	defer cancelWait()
	for len(w.pending) > 0 && wait.Err() == nil {
		fetches := consumer.PollFetches(wait)
		fetches.EachError(func(topic string, partition int32, err error) {
			if !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, context.Canceled) {
				fmt.Fprintf(stderr, "fetching %s[%d]: %v\n", topic, partition, err)
			}
		})
		fetches.EachRecord(w.record)
	}
	for _, id := range slices.Sorted(maps.Keys(w.pending)) {
		fmt.Fprintf(stdout, "missing %s\n", id)
	}
	fmt.Fprintf(stderr, "results: %d, dead letters: %d, missing: %d, unexpected: %d\n",
		w.results, w.deadLettered, len(w.pending), w.unexpected)
	if len(w.pending) > 0 || w.unexpected > 0 {
		return 1, nil
	}
	return 0, nil
}

// librdkafkaPartitioner puts a record where librdkafka's default partitioner
// (consistent_random: the CRC-32 of the key) does, and so torchkafka's Python
// clients: a request sent again from either goes to the same partition.
// (kgo's default hashes keys as Java's client does, with murmur2.)
func librdkafkaPartitioner() kgo.Partitioner {
	return kgo.BasicConsistentPartitioner(func(string) func(*kgo.Record, int) int {
		return func(r *kgo.Record, partitions int) int {
			return int(crc32.ChecksumIEEE(r.Key) % uint32(partitions))
		}
	})
}

// waiter matches the records of the output and dead-letter topics to the
// requests sent; records of other clients' requests are skipped.
type waiter struct {
	output, deadLetters               string            // the topics
	pending                           map[string]string // id -> the dead-letter reason it must get ("": a result)
	out, errs                         io.Writer
	results, deadLettered, unexpected int
}

func (w *waiter) record(r *kgo.Record) {
	switch r.Topic {
	case w.output:
		w.result(r)
	case w.deadLetters:
		w.deadLetter(r)
	}
}

func (w *waiter) result(r *kgo.Record) {
	result, err := wire.DecodeResult(r.Value)
	if err != nil {
		id := string(r.Key) // a result keeps its request's key
		if _, ours := w.pending[id]; ours {
			delete(w.pending, id)
			w.unexpected++
			fmt.Fprintf(w.out, "bad-result %s error=%q\n", id, err)
		}
		return
	}
	reason, ours := w.pending[result.ID]
	if !ours {
		return // another client's, or a second copy
	}
	delete(w.pending, result.ID)
	w.results++
	outputs := make([]string, 0, len(result.Outputs))
	for _, name := range slices.Sorted(maps.Keys(result.Outputs)) {
		t := result.Outputs[name]
		outputs = append(outputs, fmt.Sprintf("%s=%s%s", name, t.Dtype, strings.ReplaceAll(fmt.Sprint(t.Shape), " ", ",")))
	}
	fmt.Fprintf(w.out, "result %s %s model=%s version=%s worker=%s\n", result.ID, strings.Join(outputs, " "),
		result.Model.Name, result.Model.Version, result.Worker)
	if reason != "" {
		fmt.Fprintf(w.errs, "unexpected: %s got a result, not a %s dead letter\n", result.ID, reason)
		w.unexpected++
	}
}

func (w *waiter) deadLetter(r *kgo.Record) {
	// The dead letter keeps the request's key (its id, as sent here) and
	// value; either may be left out of an oversized one.
	id := string(r.Key)
	if _, ours := w.pending[id]; !ours {
		id, _ = wire.RequestID(r.Value)
	}
	reason, ours := w.pending[id]
	if !ours {
		return
	}
	headers := make([]wire.Header, len(r.Headers))
	for i, h := range r.Headers {
		headers[i] = wire.Header(h)
	}
	delete(w.pending, id)
	dl, err := wire.ReadDeadLetter(headers)
	if err != nil {
		w.unexpected++
		fmt.Fprintf(w.out, "bad-dead-letter %s error=%q\n", id, err)
		return
	}
	w.deadLettered++
	fmt.Fprintf(w.out, "dead-letter %s reason=%s error=%q\n", id, dl.Reason, dl.Error)
	if dl.Reason != reason {
		fmt.Fprintf(w.errs, "unexpected: %s was dead-lettered as %s, want %s\n", id, dl.Reason, cmp.Or(reason, "a result"))
		w.unexpected++
	}
}
