package daemon

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/cohortd/cohort/daemon/campaign"
	"github.com/cohortd/cohort/daemon/config"
	"github.com/cohortd/cohort/daemon/message"
	"github.com/cohortd/cohort/daemon/pluginhost"
	"github.com/cohortd/cohort/daemon/unsubscribe"
	"github.com/cohortd/cohort/rules"
	"github.com/cohortd/cohort/sdk"
	"github.com/cohortd/cohort/storage"
)

// unsubscribeSecretSetting names the generated unsubscribe signing key in
// the settings table.
const unsubscribeSecretSetting = "unsubscribe_secret"

// CompileMessages compiles the rule set's campaign templates against the
// schema; an error lists every problem with file:line:col.
func CompileMessages(cfg *config.Config, set *rules.Set, s *Schema) (*message.Set, error) {
	return message.Compile(cfg.Path(cfg.Rules.Dir), set.Campaigns(), s.Rules.Traits)
}

// Signer returns the unsubscribe link signer: the configured secret, else
// the one generated and kept in the database (the first daemon to start
// creates it; every daemon on the database then signs alike).
func Signer(ctx context.Context, db *storage.DB, secret string, ttl time.Duration) (*unsubscribe.Signer, error) {
	if secret == "" {
		var b [48]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		var err error
		if secret, err = db.SettingOrInit(ctx, unsubscribeSecretSetting, base64.RawURLEncoding.EncodeToString(b[:])); err != nil {
			return nil, err
		}
	}
	return unsubscribe.NewSigner([]byte(secret), ttl)
}

// Contacts merges the contact fields the sources declare (first wins).
func (s *Schema) Contacts() campaign.Contacts {
	var c campaign.Contacts
	for _, info := range s.Sources {
		if c.Email == "" {
			c.Email = info.Contact.Email
		}
		if c.Phone == "" {
			c.Phone = info.Contact.Phone
		}
		if c.Timezone == "" {
			c.Timezone = info.Contact.Timezone
		}
	}
	return c
}

// newCampaigns builds the campaign engine over the running channel
// instances.
func (d *Daemon) newCampaigns(ctx context.Context, schema *Schema, set *rules.Set, msgs *message.Set) (*campaign.Engine, error) {
	signer, err := Signer(ctx, d.db, d.cfg.Messages.UnsubscribeSecret, d.cfg.Messages.UnsubscribeTTL)
	if err != nil {
		return nil, fmt.Errorf("unsubscribe links: %w", err)
	}
	channels := map[string]*campaign.Channel{}
	for _, name := range d.cfg.Channels.Names {
		in := d.cfg.Channels.ByName[name]
		inst := d.plugins.Instance(name)
		info := inst.ChannelInfo()
		ch := &campaign.Channel{Name: name, Kind: schema.Channels[name], Concurrency: in.Concurrency, Batch: in.Batch, Rate: in.Rate,
			Timeout: in.Timeout, Resend: in.OnUnknown == "resend"}
		if ch.Batch == 0 {
			ch.Batch = max(info.MaxBatch, 1)
		}
		if info.MaxBatch > 0 {
			ch.Batch = min(ch.Batch, info.MaxBatch)
		}
		if ch.Rate == 0 {
			ch.Rate = info.RateHint
		}
		ch.Ready = func() bool { return inst.Status().State == pluginhost.StateRunning }
		ch.NoEvents = inst.NoDeliveryEvents
		ch.Send = func(ctx context.Context, msgs []sdk.Message) ([]sdk.Result, error) {
			c, err := d.plugins.Channel(name)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", campaign.ErrNotSent, err)
			}
			res, err := c.Send(ctx, msgs)
			if errors.Is(err, pluginhost.ErrNotRunning) {
				return nil, fmt.Errorf("%w: %w", campaign.ErrNotSent, err)
			}
			return res, err
		}
		channels[name] = ch
	}
	d.mu.Lock()
	seg, now := d.segmenter, d.now
	d.mu.Unlock()
	e := campaign.New(campaign.Options{
		DB: d.db, Log: d.log, Registry: d.registry, Now: now, Location: d.cfg.Location, Channels: channels,
		Contacts: schema.Contacts(), Traits: schema.Rules.Traits, Signer: signer, Holds: seg, Single: d.cfg.Storage.Driver == "sqlite",
		Messages: campaign.Messages{From: d.cfg.Messages.From, ReplyTo: d.cfg.Messages.ReplyTo, PostalAddress: d.cfg.Messages.PostalAddress,
			PublicURL: d.cfg.HTTP.PublicURL, Consent: campaign.ConsentMode(d.cfg.Messages.Consent),
			MaxAttempts: d.cfg.Messages.MaxAttempts, UnknownTTL: d.cfg.Messages.UnknownTTL},
	})
	e.SetRules(set, msgs)
	h := unsubscribe.Handler(signer, e, now, d.log.With("component", "unsubscribe"))
	d.unsub.Store(&h)
	return e, nil
}

// unsubscribeHandler serves /unsubscribe once the campaign engine runs.
func (d *Daemon) unsubscribeHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := d.unsub.Load()
		if h == nil {
			w.Header().Set("Retry-After", "5")
			http.Error(w, "Cohort is starting; try again in a moment.", http.StatusServiceUnavailable)
			return
		}
		(*h).ServeHTTP(w, r)
	})
}

// SetClock replaces the clock every time decision of campaigns uses
// (quiet hours, caps, backoff, leases, windows). Call it before Run; tests
// use it to move time.
func (d *Daemon) SetClock(now func() time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.now = now
}

// Campaigns is the campaign engine (nil until the daemon is ready).
func (d *Daemon) Campaigns() *campaign.Engine {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.campaigns
}
