package memory_test

import (
	"testing"

	"github.com/referrer-sync/referrer-sync/ports"
	"github.com/referrer-sync/referrer-sync/ports/conformance"
	"github.com/referrer-sync/referrer-sync/ports/memory"
)

func TestLedgerConformance(t *testing.T) {
	conformance.Ledger(t, func(*testing.T) (ports.Ledger, ports.Ledger) {
		l := memory.NewLedger()
		return l, l
	})
}
