package hubspot_test

import (
	"context"
	"errors"
	"log"
	"os"

	"github.com/referrer-sync/referrer-sync/adapters/hubspot"
	"github.com/referrer-sync/referrer-sync/ports"
)

// A connection's start-up: build the client, make sure the marker property
// exists, and check every property the campaigns map, so that a
// misconfiguration fails the deploy instead of dead-lettering events.
func Example() {
	ctx := context.Background()
	crm, err := hubspot.New(hubspot.Config{
		Connection: "hubspot-main",
		Token:      os.Getenv("HUBSPOT_TOKEN"), // a private-app token or a service key
	})
	if err != nil {
		log.Fatal(err) // every configuration problem, at once
	}
	if _, err := crm.EnsureMarker(ctx); err != nil {
		log.Fatal(err) // Unauthorized: the token lacks crm.schemas.contacts.write
	}
	mapped := []string{"firstname", "referral_link"} // the targets the campaigns map
	var perr *hubspot.PropertyError
	switch err := crm.CheckProperties(ctx, mapped); {
	case errors.As(err, &perr):
		log.Fatalf("create these contact properties in HubSpot: %v", perr.Missing)
	case ports.KindOf(err) == ports.Unauthorized:
		log.Fatal("HubSpot refused the token: ", err)
	case err != nil:
		log.Fatal(err)
	}
	var _ ports.CRM = crm // ready for the use case
}
