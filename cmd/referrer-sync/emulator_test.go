package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"regexp"
	"testing"
)

// TestEmulatorBannerURLAnswers follows the state URL intercom-emulator
// prints at start-up: it must answer 200, not "no workspace".
func TestEmulatorBannerURLAnswers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := cmdEmulator(ctx, []string{"--listen", "127.0.0.1:0"}, pw)
		pw.CloseWithError(err)
		done <- err
	}()
	t.Cleanup(func() {
		cancel()
		go func() { _, _ = io.Copy(io.Discard, pr) }()
		if err := <-done; err != nil {
			t.Errorf("emulator: %v", err)
		}
	})
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatalf("banner: %v", err)
	}
	u := regexp.MustCompile(`http://[^\s,)]+/_emulator/contacts[^\s,)]*`).FindString(line)
	if u == "" {
		t.Fatalf("banner %q names no contacts URL", line)
	}
	res, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	_ = res.Body.Close() // read to the end
	if res.StatusCode != http.StatusOK {
		t.Errorf("GET %s: %d %s", u, res.StatusCode, body)
	}
}
