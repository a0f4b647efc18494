// Package campaign runs campaigns (DESIGN.md sections 5 and 6): the planner
// turns segment changes and cron fires into occurrences, assigns each
// customer an arm and queues one outbox row per message; dispatchers claim
// due rows under leases, apply the send-time policies, render and send
// through channel plugins and record exactly one outcome per row; delivery
// events resolve unknowns; results compare the arms.
package campaign

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"strings"

	"github.com/cohortd/cohort/rules"
)

// HoldoutArm is the arm name of the holdout group.
const HoldoutArm = "holdout"

// Buckets is the number of assignment buckets.
const Buckets = 10000

// Bucket is the customer's assignment bucket in [0, Buckets): the
// big-endian uint64 of the first 8 bytes of SHA-256(salt ‖ 0x00 ‖ id),
// modulo 10,000.
func Bucket(salt, customerID string) int {
	h := sha256.New()
	h.Write([]byte(salt))
	h.Write([]byte{0})
	h.Write([]byte(customerID))
	var sum [sha256.Size]byte
	return int(binary.BigEndian.Uint64(h.Sum(sum[:0])[:8]) % Buckets)
}

// Assign returns the arm a customer gets on first assignment: the holdout
// buckets [0, H) first, then the variants (sorted by name) by cumulative
// weight over the rest. Once a winner is decided, every non-holdout bucket
// gets the winner, so the holdout keeps its share.
func Assign(c *rules.Campaign, customerID, winner string) (arm string, holdout bool) {
	salt := c.Salt
	if salt == "" {
		salt = c.Name
	}
	b := Bucket(salt, customerID)
	if b < c.Holdout {
		return HoldoutArm, true
	}
	if winner != "" {
		return winner, false
	}
	rest := Buckets - c.Holdout
	cum := 0
	for _, v := range c.Variants {
		cum += v.Weight
		if b < c.Holdout+rest*cum/100 {
			return v.Name, false
		}
	}
	return c.Variants[len(c.Variants)-1].Name, false
}

// Key is the outbox row key of one message: unique per campaign,
// occurrence, customer and channel, stable across retries and restarts,
// and free of personal data (it travels to providers).
func Key(campaign, occurrence, customerID, channel string) string {
	h := sha256.New()
	for _, s := range []string{campaign, occurrence, customerID, channel} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	var sum [sha256.Size]byte
	return hex.EncodeToString(h.Sum(sum[:0])[:16])
}

// AddressHash is the suppression-list hash of a contact address: SHA-256 of
// the trimmed, lower-cased address (an E.164 number is unaffected).
func AddressHash(addr string) string {
	s := sha256.Sum256([]byte("address\x00" + strings.ToLower(strings.TrimSpace(addr))))
	return hex.EncodeToString(s[:])
}

// CustomerHash is the suppression-list hash of a customer id.
func CustomerHash(id string) string {
	s := sha256.Sum256([]byte("customer\x00" + id))
	return hex.EncodeToString(s[:])
}
