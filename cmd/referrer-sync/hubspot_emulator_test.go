package main

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// TestHubSpotEmulatorCommand starts hubspot-emulator, follows the state URL
// its banner prints, and creates a contact with the token it was given.
func TestHubSpotEmulatorCommand(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := cmdHubSpotEmulator(ctx, []string{"--listen", "127.0.0.1:0", "--token", "tok-cmd", "--account", "77"}, pw)
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
	base := regexp.MustCompile(`http://[^\s,)]+`).FindString(line)
	state := regexp.MustCompile(`/_emulator/contacts\?account=77`).FindString(line)
	if base == "" || state == "" {
		t.Fatalf("banner %q names no base or contacts URL", line)
	}
	do := func(method, path, token, body string) int {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, method, base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = res.Body.Close() // only the status matters
		return res.StatusCode
	}
	tests := []struct {
		name, method, path, token, body string
		want                            int
	}{
		{"create with the token", "POST", "/crm/objects/2026-03/contacts", "tok-cmd", `{"properties":{"email":"a@example.com","referral_link":"x"}}`, 201},
		{"duplicate email", "POST", "/crm/objects/2026-03/contacts", "tok-cmd", `{"properties":{"email":"a@example.com"}}`, 409},
		{"another token", "GET", "/crm/v3/properties/contacts", "tok-other", "", 401},
		{"state URL", "GET", state, "", "", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := do(tt.method, tt.path, tt.token, tt.body); got != tt.want {
				t.Errorf("%s %s = %d, want %d", tt.method, tt.path, got, tt.want)
			}
		})
	}
}

func TestHubSpotEmulatorCommandUsage(t *testing.T) {
	tests := [][]string{{"--token", ""}, {"--rate-limit", "-1"}, {"--unique-properties", "Bad Name"}}
	for _, args := range tests {
		err := cmdHubSpotEmulator(context.Background(), append(args, "--listen", "127.0.0.1:0"), io.Discard)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("args %v: error %v, want a usage error", args, err)
		}
	}
}
