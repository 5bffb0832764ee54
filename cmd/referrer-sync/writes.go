package main

import (
	"fmt"
	"io"
)

// writes keeps the first error of a run of writes, so that a command that
// prints many lines checks them once, where it returns; after an error it
// writes nothing more.
type writes struct{ err error }

func (x *writes) printf(w io.Writer, format string, args ...any) {
	if x.err == nil {
		_, x.err = fmt.Fprintf(w, format, args...)
	}
}

func (x *writes) println(w io.Writer, args ...any) {
	if x.err == nil {
		_, x.err = fmt.Fprintln(w, args...)
	}
}

func (x *writes) print(w io.Writer, args ...any) {
	if x.err == nil {
		_, x.err = fmt.Fprint(w, args...)
	}
}

// done returns the first write error, else err (a flush's, say).
func (x *writes) done(err error) error {
	if x.err != nil {
		return x.err
	}
	return err
}
