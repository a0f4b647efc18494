package sdk

import (
	"errors"
	"runtime"
	"sync"
)

// groupChunk is how many batches of a batch group the host decodes at a
// time, on two goroutines, before sending them in order.
const groupChunk = 4

// errSequential marks a batch left for decodeGroup's sequential pass.
var errSequential = errors.New("decoded alone")

// decodeGroup decodes the batches of a batch group and calls send with
// each, in order, as decoding them one by one would. Up to groupChunk
// batches at a time are decoded on two goroutines (d and a helper
// decoder) while the stream's name table is frozen: the chunk's names
// (Batch.trait_names) are added first, in order. A batch with events
// (whose property names d shares), or whose map-form traits name a trait
// the table does not have yet, is decoded again afterwards, alone. Each
// batch of a chunk has a FlatBatch of its own, reused by the next chunk:
// valid until the next chunk's first send. A decoding error is returned
// as malformedBatch's error, after the batches before it were sent; an
// error from send is returned as it is.
func (d *flatDecoder) decodeGroup(group [][]byte, send func(*FlatBatch) error) error {
	parallel := runtime.GOMAXPROCS(0) > 1
	for len(group) > 0 {
		n := min(len(group), groupChunk)
		chunk := group[:n]
		group = group[n:]
		if !parallel || n == 1 {
			for _, raw := range chunk {
				b, err := d.decode(raw)
				if err != nil {
					return malformedBatch(err)
				}
				if err := send(b); err != nil {
					return err
				}
			}
			continue
		}
		counts := d.counts[:0]
		for _, raw := range chunk {
			c, err := d.scan(raw, true)
			if err != nil {
				// The batches before it go out first, as one by one.
				return d.sendUntil(chunk, counts, err, send)
			}
			counts = append(counts, c)
		}
		d.counts = counts
		for len(d.pool) < n {
			d.pool = append(d.pool, &FlatBatch{})
		}
		h := d.helper()
		errs := d.errs[:0]
		for range n {
			errs = append(errs, nil)
		}
		d.errs = errs
		decode := func(dec *flatDecoder, first int) {
			for i := first; i < n; i += 2 {
				if counts[i][fBatchEvents] > 0 {
					errs[i] = errSequential
					continue
				}
				_, errs[i] = dec.decodeInto(d.pool[i], chunk[i], &counts[i])
			}
		}
		d.names.frozen = true
		var wg sync.WaitGroup
		wg.Go(func() { decode(h, 1) })
		decode(d, 0)
		wg.Wait()
		d.names.frozen = false
		for i := range chunk {
			b := d.pool[i]
			if errors.Is(errs[i], errFrozen) || errors.Is(errs[i], errSequential) {
				_, errs[i] = d.decodeInto(b, chunk[i], &counts[i])
			}
			if errs[i] != nil {
				return malformedBatch(errs[i])
			}
			b.Names = d.names.names
			if err := send(b); err != nil {
				return err
			}
		}
	}
	return nil
}

// sendUntil decodes and sends the counted batches of chunk before the one
// whose scan failed with scanErr, then returns scanErr as malformedBatch's.
func (d *flatDecoder) sendUntil(chunk [][]byte, counts []batchCounts, scanErr error, send func(*FlatBatch) error) error {
	for i := range counts {
		b, err := d.decodeInto(&d.batch, chunk[i], &counts[i])
		if err != nil {
			return malformedBatch(err)
		}
		b.Names = d.names.names
		if err := send(b); err != nil {
			return err
		}
	}
	return malformedBatch(scanErr)
}

// helper returns d's helper decoder, brought up to date with d's name
// tables: it shares them, read-only (its table is always frozen), and
// has scratch space of its own.
func (d *flatDecoder) helper() *flatDecoder {
	h := d.help
	if h == nil {
		h = &flatDecoder{}
		h.names.frozen = true
		d.help = h
	}
	h.names.index, h.names.names = d.names.index, d.names.names
	for len(h.names.seen) < len(h.names.names) {
		h.names.seen = append(h.names.seen, 0)
		h.names.at = append(h.names.at, 0)
	}
	h.remap = d.remap
	return h
}
