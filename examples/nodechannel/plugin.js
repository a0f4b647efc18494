#!/usr/bin/env node
// nodechannel: an example Cohort channel plugin written in Node.js.
//
// It is built from the wire contract alone (sdk/proto/cohort/plugin/v1/
// plugin.proto, loaded at run time) plus the few things hashicorp/go-plugin
// (v1.8.0) expects of any plugin process. Those are marked "go-plugin:" below;
// README.md lists them in one place.
//
// The channel itself sends nothing: every message is ACCEPTED with provider id
// "node-<key>", except recipients at the configured fail_domain, which get a
// PERMANENT result, so a host can see per-message outcomes.
//
// Rules every part of this file keeps:
//   - Nothing but the handshake line is ever written to stdout.
//   - Logs go to stderr as hclog JSON lines, which the host re-logs with the
//     plugin instance's name and the right level.
'use strict';

const crypto = require('node:crypto');
const path = require('node:path');
const tls = require('node:tls');

const NAME = 'nodechannel';
const VERSION = '0.1.0';
const KINDS = ['email', 'sms', 'webhook'];
const MAX_BATCH = 100;

// go-plugin: the host sets the magic cookie in the environment. It is not a
// security measure, only a guard against someone running the plugin by hand.
// Both must equal sdk.Handshake in github.com/cohortd/cohort/sdk (node_test.go
// checks that they do).
const COOKIE_KEY = 'COHORT_PLUGIN';
const COOKIE_VALUE = '8c8890cf03791f8344c8b601deac1079ac926fbb4732fda15a26f398d2e17d2c';

// go-plugin: the handshake starts with the core protocol version (always 1)
// and the application protocol version this plugin speaks (Cohort's v1).
const CORE_PROTOCOL_VERSION = 1;
const APP_PROTOCOL_VERSION = 1;

// ---------------------------------------------------------------------------
// Logging: hclog JSON lines on stderr.
// ---------------------------------------------------------------------------

// go-plugin parses "@timestamp" with the Go layout
// "2006-01-02T15:04:05.000000Z07:00": exactly six fractional digits. A line
// whose timestamp does not parse (e.g. Date.toISOString's three digits) is not
// treated as JSON at all and ends up in the host's log verbatim at DEBUG.
function timestamp() {
  return new Date().toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');
}

function log(level, message, fields) {
  // No "@module": go-plugin would pass it through as an attribute that
  // overrides the name the host gives the plugin's lines (its instance).
  const entry = Object.assign({ '@level': level, '@message': message, '@timestamp': timestamp() }, fields);
  try {
    process.stderr.write(JSON.stringify(entry) + '\n');
  } catch (_) {
    // stderr is gone: so is the host (see the 'error' handlers below).
  }
}

// guardProcess is called first thing in main (not at require time, so that
// requiring this file for its helpers has no side effects).
function guardProcess() {
  // Keep stdout clean even if some code calls console.log: route the console
  // to the log. (console.error/warn go to stderr anyway, but as plain text.)
  console.log = console.info = (...a) => log('info', a.map(String).join(' '));
  console.debug = (...a) => log('debug', a.map(String).join(' '));
  console.warn = (...a) => log('warn', a.map(String).join(' '));
  console.error = (...a) => log('error', a.map(String).join(' '));

  // A broken pipe on stdout or stderr means the host has gone (Node ignores
  // SIGPIPE, so the write fails with EPIPE instead of killing the process).
  process.stdout.on('error', () => process.exit(0));
  process.stderr.on('error', () => process.exit(0));

  process.on('uncaughtException', (err) => {
    log('error', 'uncaught exception', { error: String(err && err.stack ? err.stack : err) });
    process.exit(1);
  });
}

function fatal(message) {
  // Human-readable on purpose: this is what someone who ran the plugin by
  // hand, or the host's log, shows.
  process.stderr.write(message.replace(/\n*$/, '\n'));
  process.exit(1);
}

// ---------------------------------------------------------------------------
// go-plugin handshake checks (before loading anything heavy).
// ---------------------------------------------------------------------------

function checkCookie() {
  const got = process.env[COOKIE_KEY];
  if (got !== COOKIE_VALUE) {
    fatal(
      'This program is a Cohort plugin (channel "' + NAME + '"). It is not meant to be run\n' +
      'directly: list it under plugins: in the Cohort daemon\'s config.yaml and the daemon\n' +
      'will start it. (' + COOKIE_KEY + ' is ' + (got ? 'set to the wrong value' : 'not set') + '.)',
    );
  }
}

// go-plugin: PLUGIN_PROTOCOL_VERSIONS lists the application protocol versions
// the host can speak ("1" or "1,2"). The plugin picks one it speaks and
// announces it in the handshake. A host that sends nothing is a legacy host:
// assume the version the plugin has.
function negotiateVersion() {
  const raw = process.env.PLUGIN_PROTOCOL_VERSIONS;
  if (raw === undefined || raw.trim() === '') return APP_PROTOCOL_VERSION;
  const offered = raw.split(',').map((s) => Number.parseInt(s.trim(), 10));
  if (offered.includes(APP_PROTOCOL_VERSION)) return APP_PROTOCOL_VERSION;
  fatal(
    'Cohort plugin "' + NAME + '" speaks plugin protocol version ' + APP_PROTOCOL_VERSION +
    ', but the host offers only ' + JSON.stringify(raw) + ' (PLUGIN_PROTOCOL_VERSIONS). ' +
    'Use a plugin release built for this version of Cohort.',
  );
  return 0; // not reached
}

// ---------------------------------------------------------------------------
// AutoMTLS: a fresh self-signed certificate, built with node:crypto only.
// ---------------------------------------------------------------------------
//
// Node can make keys and signatures but not certificates, so this is a
// minimal DER encoder for exactly one X.509 v3 certificate shape (RFC 5280):
//
//   Certificate ::= SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue BIT STRING }
//   TBSCertificate ::= SEQUENCE {
//     [0] EXPLICIT version (2 = v3), serialNumber INTEGER, signature AlgorithmIdentifier,
//     issuer Name, validity SEQUENCE { notBefore, notAfter }, subject Name,
//     subjectPublicKeyInfo, [3] EXPLICIT extensions }
//
// What the host (Go's crypto/tls, configured by go-plugin) checks: the cert
// parses, it is valid now, it names DNS "localhost" in subjectAltName (the
// host's ServerName), its extended key usage allows serverAuth, and its
// signature verifies (the cert is its own root: go-plugin puts it in RootCAs).
// clientAuth is added too, as go-plugin's own certificates have it.

// DER length octets: short form below 128, else 0x80|n followed by n bytes.
function derLength(n) {
  if (n < 0x80) return Buffer.from([n]);
  const bytes = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

// One TLV (tag, length, value); the value is the concatenation of parts.
function der(tag, ...parts) {
  const value = Buffer.concat(parts);
  return Buffer.concat([Buffer.from([tag]), derLength(value.length), value]);
}

const seq = (...p) => der(0x30, ...p);
const set = (...p) => der(0x31, ...p);
const explicit = (n, ...p) => der(0xa0 + n, ...p); // [n] EXPLICIT, constructed
const octets = (buf) => der(0x04, buf);
const utf8 = (s) => der(0x0c, Buffer.from(s, 'utf8'));
const derTrue = () => der(0x01, Buffer.from([0xff]));

// INTEGER from an unsigned big-endian magnitude: minimal, and a leading 0x00
// when the top bit is set (else it would read as negative).
function integer(magnitude) {
  let i = 0;
  while (i < magnitude.length - 1 && magnitude[i] === 0) i++;
  let b = magnitude.subarray(i);
  if (b[0] & 0x80) b = Buffer.concat([Buffer.from([0]), b]);
  return der(0x02, b);
}

// OBJECT IDENTIFIER: first two arcs as 40*a+b, each arc base-128, high bit =
// "more bytes follow".
function oid(dotted) {
  const arcs = dotted.split('.').map(Number);
  const out = [40 * arcs[0] + arcs[1]];
  for (const arc of arcs.slice(2)) {
    const b = [arc & 0x7f];
    for (let v = Math.floor(arc / 128); v > 0; v = Math.floor(v / 128)) b.unshift(0x80 | (v & 0x7f));
    out.push(...b);
  }
  return der(0x06, Buffer.from(out));
}

// RFC 5280 4.1.2.5: UTCTime (YYMMDDHHMMSSZ) through 2049, GeneralizedTime
// (YYYYMMDDHHMMSSZ) from 2050 on; whole seconds, always UTC.
function derTime(date) {
  const s = date.toISOString().replace(/[-:T]/g, '').replace(/\.\d+Z$/, 'Z'); // YYYYMMDDHHMMSSZ
  const year = date.getUTCFullYear();
  return year < 2050 ? der(0x17, Buffer.from(s.slice(2), 'ascii')) : der(0x18, Buffer.from(s, 'ascii'));
}

// BIT STRING: first octet = number of unused bits in the last octet.
const bitString = (buf, unused = 0) => der(0x03, Buffer.from([unused]), buf);

// Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue OCTET STRING (DER) }
function extension(id, critical, value) {
  return critical ? seq(oid(id), derTrue(), octets(value)) : seq(oid(id), octets(value));
}

const OID = {
  ecdsaWithSHA256: '1.2.840.10045.4.3.2',
  commonName: '2.5.4.3',
  organization: '2.5.4.10',
  basicConstraints: '2.5.29.19',
  keyUsage: '2.5.29.15',
  extKeyUsage: '2.5.29.37',
  subjectAltName: '2.5.29.17',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
};

// makeCertificate returns { der, certPem, keyPem } for a new ECDSA P-256 key.
function makeCertificate(now = new Date()) {
  const { publicKey, privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });

  // 16 random bytes; top bit cleared (positive), second bit set (non-zero,
  // already minimal).
  const serial = crypto.randomBytes(16);
  serial[0] = (serial[0] & 0x7f) | 0x40;

  const name = seq(
    set(seq(oid(OID.organization), utf8('Cohort plugin ' + NAME))),
    set(seq(oid(OID.commonName), utf8('localhost'))),
  );
  const sigAlg = seq(oid(OID.ecdsaWithSHA256)); // parameters absent for ECDSA (RFC 5758)

  // Valid from a minute ago (clock skew between host and plugin is nil, but
  // a cert "not yet valid" by a second would fail the handshake) for 30
  // years, like go-plugin's own: a long-running daemon may reconnect to a
  // plugin instance months after it started, and each TLS handshake checks
  // validity again.
  const notBefore = new Date(now.getTime() - 60 * 1000);
  const notAfter = new Date(now.getTime() + 30 * 365 * 24 * 3600 * 1000);

  const extensions = seq(
    // CA:TRUE, as go-plugin makes it: the certificate is its own trust root.
    extension(OID.basicConstraints, true, seq(derTrue())),
    // digitalSignature (bit 0) + keyCertSign (bit 5): 1000 0100, 2 unused bits.
    extension(OID.keyUsage, true, bitString(Buffer.from([0x84]), 2)),
    extension(OID.extKeyUsage, false, seq(oid(OID.serverAuth), oid(OID.clientAuth))),
    // GeneralName dNSName is [2] IMPLICIT IA5String: tag 0x82.
    extension(OID.subjectAltName, false, seq(der(0x82, Buffer.from('localhost', 'ascii')))),
  );

  const tbs = seq(
    explicit(0, der(0x02, Buffer.from([2]))), // version v3
    integer(serial),
    sigAlg,
    name, // issuer (self-signed: issuer = subject)
    seq(derTime(notBefore), derTime(notAfter)),
    name, // subject
    publicKey.export({ type: 'spki', format: 'der' }), // SubjectPublicKeyInfo, ready-made
    explicit(3, extensions),
  );

  // For EC keys crypto.sign returns the DER Ecdsa-Sig-Value X.509 wants.
  const signature = crypto.sign('sha256', tbs, { key: privateKey, dsaEncoding: 'der' });
  const cert = seq(tbs, sigAlg, bitString(signature));

  const b64 = cert.toString('base64').replace(/.{64}/g, '$&\n').replace(/\n$/, '');
  return {
    der: cert,
    certPem: Buffer.from('-----BEGIN CERTIFICATE-----\n' + b64 + '\n-----END CERTIFICATE-----\n'),
    keyPem: Buffer.from(privateKey.export({ type: 'pkcs8', format: 'pem' })),
  };
}

// ---------------------------------------------------------------------------
// Channel configuration: empty, or flat "key: value" lines.
// ---------------------------------------------------------------------------

// ConfigError is a bad config; field names the config key at fault ('' when
// the line cannot be read at all).
class ConfigError extends Error {
  constructor(field, message) {
    super(message);
    this.field = field;
  }
}

// parseScalar reads one YAML-ish scalar: 'single' ('' escapes a quote),
// "double" (JSON escapes), or plain text; a trailing " # comment" is dropped.
// null, ~ and nothing mean "not set".
function parseScalar(raw, key, lineNo) {
  const s = raw.trim();
  let value;
  let rest;
  if (s.startsWith('"')) {
    const m = /^"((?:[^"\\]|\\.)*)"(.*)$/.exec(s);
    if (!m) throw new ConfigError(key, `config line ${lineNo}: ${key}: unterminated double-quoted string`);
    try {
      value = JSON.parse('"' + m[1] + '"');
    } catch (_) {
      throw new ConfigError(key, `config line ${lineNo}: ${key}: bad escape in double-quoted string`);
    }
    rest = m[2];
  } else if (s.startsWith("'")) {
    const m = /^'((?:[^']|'')*)'(.*)$/.exec(s);
    if (!m) throw new ConfigError(key, `config line ${lineNo}: ${key}: unterminated single-quoted string`);
    value = m[1].replace(/''/g, "'");
    rest = m[2];
  } else {
    const hash = s.search(/(^|\s)#/);
    value = (hash >= 0 ? s.slice(0, hash) : s).trim();
    if (value === '' || value === '~' || value === 'null') return null;
    if (/^[[{&*!|>]/.test(value)) {
      throw new ConfigError(key, `config line ${lineNo}: ${key}: only plain scalar values are supported, got ${JSON.stringify(value)}`);
    }
    return value;
  }
  if (rest.trim() !== '' && !/^\s+#/.test(rest)) {
    throw new ConfigError(key, `config line ${lineNo}: ${key}: unexpected text after quoted string: ${JSON.stringify(rest.trim())}`);
  }
  return value;
}

// splitFlow splits the inside of a one-line flow mapping ("a: 1, b: 'x, y'")
// at the commas that are not inside quotes.
function splitFlow(inner) {
  const parts = [];
  let cur = '';
  let quote = '';
  for (const c of inner) {
    if (quote) {
      if (c === quote) quote = ''; // '' inside '...' and \" inside "..." re-enter at once: harmless here
    } else if (c === '"' || c === "'") {
      quote = c;
    } else if (c === ',') {
      parts.push(cur);
      cur = '';
      continue;
    }
    cur += c;
  }
  parts.push(cur);
  return parts.map((p) => p.trim()).filter((p) => p !== '');
}

// parseConfig reads the config block. The daemon re-encodes the instance's
// `config:` block with yaml.v3 keeping its style, so besides flat block
// lines ("kind: sms") this also accepts one flow mapping on one line
// ("{kind: sms, fail_domain: x.example}"), comments and quoted scalars.
function parseConfig(buf) {
  const cfg = { kind: 'email', failDomain: '' };
  const text = Buffer.isBuffer(buf) ? buf.toString('utf8') : String(buf || '');
  // What an empty config block re-encoded as YAML may look like.
  if (['', '{}', 'null', '~', '---'].includes(text.trim())) return cfg;

  const seen = new Set();
  const entry = (item, lineNo) => {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)\s*:(?:\s(.*))?$/.exec(item.replace(/\s+$/, ''));
    if (!m) throw new ConfigError('', `config line ${lineNo}: expected "key: value", got ${JSON.stringify(item)}`);
    const key = m[1];
    if (seen.has(key)) throw new ConfigError(key, `config line ${lineNo}: key "${key}" given twice`);
    seen.add(key);
    const value = parseScalar(m[2] || '', key, lineNo);
    switch (key) {
      case 'kind':
        if (value === null) break;
        if (!KINDS.includes(value)) {
          throw new ConfigError(
            'kind',
            `config line ${lineNo}: kind ${JSON.stringify(value)} is not allowed; kind must be one of ${KINDS.join(', ')}`,
          );
        }
        cfg.kind = value;
        break;
      case 'fail_domain':
        cfg.failDomain = value === null ? '' : value.replace(/^@/, '').toLowerCase();
        break;
      default:
        throw new ConfigError(key, `config line ${lineNo}: unknown key "${key}"; known keys: kind, fail_domain`);
    }
  };

  text.split(/\r?\n/).forEach((line, i) => {
    const lineNo = i + 1;
    const trimmed = line.trim();
    if (trimmed === '' || trimmed.startsWith('#') || trimmed === '---' || trimmed === '...') return;
    if (/^\s/.test(line)) {
      throw new ConfigError('', `config line ${lineNo}: nested values are not supported; write flat "key: value" lines`);
    }
    if (trimmed.startsWith('{')) {
      const flow = /^\{(.*)\}\s*(#.*)?$/.exec(trimmed);
      if (!flow) throw new ConfigError('', `config line ${lineNo}: a {flow mapping} must open and close on one line`);
      splitFlow(flow[1]).forEach((item) => entry(item, lineNo));
      return;
    }
    entry(line, lineNo);
  });
  return cfg;
}

// domainOf returns the lower-cased domain of an address such as
// "a@example.com" or "Ann <a@example.com>", or "" when it has none.
function domainOf(address) {
  const at = address.lastIndexOf('@');
  if (at < 0) return '';
  return address.slice(at + 1).replace(/[>\s]+$/, '').toLowerCase();
}

// ---------------------------------------------------------------------------
// Typed errors: a gRPC status with a google.rpc.ErrorInfo detail.
// ---------------------------------------------------------------------------
//
// Cohort's host (package sdk) turns a status carrying
//   ErrorInfo{domain: "cohort.plugin.v1", reason: "INVALID_CONFIG",
//             metadata: {field: "kind", message: "..."}}
// into an *sdk.Error with that code and field. Rich details travel in the
// "grpc-status-details-bin" trailer as a serialized google.rpc.Status. Three
// tiny messages, so they are encoded by hand (protobuf wire format: a key
// varint (field << 3 | wire type) then, for wire type 2, a length and bytes).
// A plain status works too: INVALID_ARGUMENT from Configure is read as
// INVALID_CONFIG, just without the field.

const ERROR_DOMAIN = 'cohort.plugin.v1';

function pbVarint(n) {
  const out = [];
  for (; n > 0x7f; n = Math.floor(n / 128)) out.push((n & 0x7f) | 0x80);
  out.push(n);
  return Buffer.from(out);
}

// A length-delimited field (strings, bytes, embedded messages); proto3 omits
// empty ones.
function pbBytes(field, value) {
  const buf = Buffer.isBuffer(value) ? value : Buffer.from(String(value), 'utf8');
  if (buf.length === 0) return Buffer.alloc(0);
  return Buffer.concat([pbVarint((field << 3) | 2), pbVarint(buf.length), buf]);
}

// statusDetails serializes google.rpc.Status{code=1, message=2, details=3:
// [Any{type_url=1, value=2: ErrorInfo{reason=1, domain=2, metadata=3}}]}; a
// map field is a repeated entry message {key=1, value=2}.
function statusDetails(code, message, reason, metadata) {
  const info = Buffer.concat([
    pbBytes(1, reason),
    pbBytes(2, ERROR_DOMAIN),
    ...Object.entries(metadata).map(([k, v]) => pbBytes(3, Buffer.concat([pbBytes(1, k), pbBytes(2, v)]))),
  ]);
  const any = Buffer.concat([pbBytes(1, 'type.googleapis.com/google.rpc.ErrorInfo'), pbBytes(2, info)]);
  return Buffer.concat([pbVarint((1 << 3) | 0), pbVarint(code), pbBytes(2, message), pbBytes(3, any)]);
}

// typedError builds the error object grpc-js sends as the call's status.
function typedError(grpc, code, reason, field, message) {
  const metadata = new grpc.Metadata();
  const md = { message };
  if (field) md.field = field;
  metadata.set('grpc-status-details-bin', statusDetails(code, message, reason, md));
  return { code, details: message, metadata };
}

// ---------------------------------------------------------------------------
// gRPC services.
// ---------------------------------------------------------------------------

function main() {
  guardProcess();
  checkCookie();
  const appVersion = negotiateVersion();
  const startedAt = process.hrtime.bigint();

  // Loaded only now, so that running the plugin by hand fails fast above.
  const grpc = require('@grpc/grpc-js');
  const protoLoader = require('@grpc/proto-loader');

  // The wire contract is read from the repository's proto file at run time:
  // it is the single source of truth, no generated code to keep in sync.
  const protoFiles = [
    path.join(__dirname, '..', '..', 'sdk', 'proto', 'cohort', 'plugin', 'v1', 'plugin.proto'),
    path.join(__dirname, 'proto', 'health.proto'),
    path.join(__dirname, 'proto', 'go_plugin.proto'),
  ];
  let loaded;
  try {
    loaded = grpc.loadPackageDefinition(
      protoLoader.loadSync(protoFiles, {
        keepCase: false, // fields are camelCase here: configYaml, maxBatch, providerId...
        longs: Number, // int64 (times in ms, retry_after_ms) as JS numbers
        enums: String, // enum values by name: 'RESULT_STATUS_ACCEPTED'
        defaults: true,
        oneofs: true,
      }),
    );
  } catch (err) {
    fatal(`Cohort plugin "${NAME}" cannot load its protocol definition: ${err.message}`);
  }

  let config = null; // set by Configure

  const channel = {
    Configure(call, callback) {
      let cfg;
      try {
        cfg = parseConfig(call.request.configYaml);
      } catch (err) {
        if (err instanceof ConfigError) {
          log('warn', 'bad config', { instance: call.request.instance, field: err.field, error: err.message });
          callback(typedError(grpc, grpc.status.INVALID_ARGUMENT, 'INVALID_CONFIG', err.field, err.message));
          return;
        }
        throw err; // a bug: safe() below answers INTERNAL
      }
      config = cfg;
      log('info', 'configured', { instance: call.request.instance, kind: cfg.kind, fail_domain: cfg.failDomain });
      callback(null, {
        name: NAME,
        version: VERSION,
        kind: cfg.kind,
        maxBatch: MAX_BATCH,
        rateHint: 0,
        webhooks: true,
      });
    },

    Send(call, callback) {
      if (config === null) {
        callback({ code: grpc.status.FAILED_PRECONDITION, details: 'Send called before Configure' });
        return;
      }
      // grpc-js cancels the call when its deadline passes; a plugin that does
      // real I/O would pass the remaining time on to it. Here the work is
      // synchronous, so only refuse work that is already too late.
      const deadline = call.getDeadline(); // a Date, or Infinity when none was set
      const deadlineMs = deadline instanceof Date ? deadline.getTime() : Number(deadline);
      if (call.cancelled || deadlineMs <= Date.now()) {
        callback({ code: grpc.status.DEADLINE_EXCEEDED, details: 'deadline exceeded before sending' });
        return;
      }
      const messages = call.request.messages || [];
      const results = messages.map((m) => {
        let r;
        if (m.key === '') {
          r = { key: '', status: 'RESULT_STATUS_PERMANENT', reason: 'message has no key' };
        } else if (config.failDomain !== '' && domainOf(m.to) === config.failDomain) {
          r = {
            key: m.key,
            status: 'RESULT_STATUS_PERMANENT',
            reason: `recipient domain ${config.failDomain} is configured to fail (fail_domain)`,
            code: 'fail_domain',
          };
        } else {
          r = { key: m.key, status: 'RESULT_STATUS_ACCEPTED', providerId: 'node-' + m.key };
        }
        // No recipient address in the log: it is personal data.
        log('info', 'send', { key: r.key, status: r.status, provider_id: r.providerId || '', reason: r.reason || '' });
        return r;
      });
      callback(null, { results });
    },

    Webhook(call, callback) {
      const req = call.request;
      const textPlain = [{ name: 'Content-Type', values: ['text/plain; charset=utf-8'] }];
      if (req.method !== 'POST') {
        callback(null, {
          response: {
            status: 405,
            headers: textPlain.concat([{ name: 'Allow', values: ['POST'] }]),
            body: Buffer.from('method not allowed\n'),
          },
          events: [],
        });
        return;
      }
      log('info', 'webhook', { path: req.path, bytes: req.body.length });
      callback(null, { response: { status: 200, headers: textPlain, body: Buffer.from('ok') }, events: [] });
    },
  };

  // go-plugin: the host pings grpc.health.v1.Health/Check with service "plugin".
  const healthOf = (service) => (service === '' || service === 'plugin' ? 'SERVING' : null);
  const health = {
    Check(call, callback) {
      const status = healthOf(call.request.service);
      if (status === null) {
        callback({ code: grpc.status.NOT_FOUND, details: `unknown service ${JSON.stringify(call.request.service)}` });
        return;
      }
      callback(null, { status });
    },
    Watch(call) {
      // Status never changes in this plugin: report it once, keep the stream
      // open until the caller goes away.
      call.write({ status: healthOf(call.request.service) || 'SERVICE_UNKNOWN' });
    },
  };

  const server = new grpc.Server({
    // The host sends up to MaxInt32 bytes per call (go-plugin's dial options);
    // grpc-js would refuse messages above 4 MiB, which a batch of 100 HTML
    // emails can exceed.
    'grpc.max_receive_message_length': -1,
  });

  let stopping = false;
  function shutdown(reason) {
    if (stopping) return;
    stopping = true;
    log('debug', 'shutting down', { reason });
    // tryShutdown lets in-flight calls (the Shutdown call itself included)
    // finish, so the host gets its answer; forceShutdown is the fallback for
    // streams the host leaves open.
    setTimeout(() => {
      server.forceShutdown();
      process.exit(0);
    }, 1000).unref();
    server.tryShutdown(() => process.exit(0));
  }

  // go-plugin: plugin.GRPCController/Shutdown is how Client.Kill asks the
  // plugin to exit; answer, then exit. Without it, Kill waits 2 s and sends
  // SIGKILL.
  const controller = {
    Shutdown(call, callback) {
      callback(null, {});
      setImmediate(() => shutdown('host called GRPCController.Shutdown'));
    },
  };

  // A bug in a handler answers that call with INTERNAL instead of taking the
  // process (and every other call in flight) down.
  const safe = (impl) => Object.fromEntries(Object.entries(impl).map(([name, fn]) => [name, (call, callback) => {
    try {
      fn(call, callback);
    } catch (err) {
      log('error', 'handler failed', { method: name, error: String(err && err.stack ? err.stack : err) });
      if (callback) callback({ code: grpc.status.INTERNAL, details: `${NAME} ${name}: ${err && err.message}` });
      else call.emit('error', { code: grpc.status.INTERNAL, details: `${NAME} ${name}: ${err && err.message}` });
    }
  }]));
  server.addService(loaded.cohort.plugin.v1.Channel.service, safe(channel));
  server.addService(loaded.grpc.health.v1.Health.service, safe(health));
  server.addService(loaded.plugin.GRPCController.service, safe(controller));

  // go-plugin: AutoMTLS. The host passes its own (self-signed, PEM)
  // certificate in PLUGIN_CLIENT_CERT; the plugin then serves TLS with a fresh
  // certificate of its own, requires the host's certificate from every
  // client, and returns its certificate in the handshake. Without
  // PLUGIN_CLIENT_CERT (automtls: false) it serves plaintext and must not
  // print a certificate: a host without AutoMTLS crashes on one.
  const clientCertPem = process.env.PLUGIN_CLIENT_CERT || '';
  let credentials;
  let certField = null;
  if (clientCertPem !== '') {
    tls.DEFAULT_MIN_VERSION = 'TLSv1.2'; // Node's default too; stated, not assumed
    const cert = makeCertificate();
    credentials = grpc.ServerCredentials.createSsl(
      Buffer.from(clientCertPem),
      [{ private_key: cert.keyPem, cert_chain: cert.certPem }],
      true, // require and verify the client certificate against PLUGIN_CLIENT_CERT
    );
    // go-plugin: base64 of the raw DER, standard alphabet, WITHOUT '=' padding
    // (the host decodes with base64.RawStdEncoding; padding breaks it whenever
    // the DER length is not a multiple of 3).
    certField = cert.der.toString('base64').replace(/=+$/, '');
  } else {
    credentials = grpc.ServerCredentials.createInsecure();
  }

  // go-plugin: listen on loopback, on the first free port from PLUGIN_MIN_PORT
  // to PLUGIN_MAX_PORT (go-plugin's host sends 10000 and 25000 unless told
  // otherwise; a Go plugin on Windows, the only one that uses TCP, scans the
  // same way). Without them, any free port.
  const minPort = Number.parseInt(process.env.PLUGIN_MIN_PORT || '0', 10) || 0;
  const maxPort = Number.parseInt(process.env.PLUGIN_MAX_PORT || '0', 10) || 0;
  const ports = minPort > 0 && maxPort >= minPort
    ? Array.from({ length: maxPort - minPort + 1 }, (_, i) => minPort + i)
    : [0];

  const bindNext = (i) => {
    server.bindAsync(`127.0.0.1:${ports[i]}`, credentials, (err, port) => {
      if (err) {
        if (i + 1 < ports.length) return bindNext(i + 1);
        fatal(`Cohort plugin "${NAME}" cannot listen on 127.0.0.1: ${err.message}`);
      }
      // go-plugin: the handshake line, the one and only write to stdout:
      // CORE-PROTOCOL|APP-PROTOCOL|NETWORK|ADDRESS|PROTOCOL[|SERVER-CERT]
      const fields = [CORE_PROTOCOL_VERSION, appVersion, 'tcp', `127.0.0.1:${port}`, 'grpc'];
      if (certField !== null) fields.push(certField);
      // go-plugin: a host started with GRPCBrokerMultiplex sets
      // PLUGIN_MULTIPLEX_GRPC and expects a 7th field; this plugin has no
      // broker, so it says "false" and the host reports the mismatch.
      if (process.env.PLUGIN_MULTIPLEX_GRPC) {
        if (certField === null) fields.push(''); // the 6th field, empty
        fields.push('false');
      }
      process.stdout.write(fields.join('|') + '\n');
      const ms = Number(process.hrtime.bigint() - startedAt) / 1e6;
      log('debug', 'plugin serving', { address: `127.0.0.1:${port}`, tls: certField !== null, startup_ms: Math.round(ms) });
    });
  };
  bindNext(0);

  // go-plugin: a plugin exits when its host dies. The host kills it on a
  // clean stop, but if the host is killed (kill -9, OOM) nobody does, so
  // watch for being re-parented (to init or a subreaper) once a second.
  // stdin is NOT a lifeline: go-plugin hands the plugin the host's own stdin
  // (cmd.Stdin = os.Stdin), which under systemd is /dev/null (EOF at once)
  // and in a terminal is the operator's keyboard.
  const parent = process.ppid;
  setInterval(() => {
    if (process.ppid !== parent) {
      log('info', 'host process went away; exiting', { old_ppid: parent, ppid: process.ppid });
      process.exit(0);
    }
  }, 1000).unref();

  // go-plugin: Go plugins ignore SIGINT. Ctrl-C in the daemon's terminal goes
  // to the whole process group; the host stops its plugins itself, in order.
  process.on('SIGINT', () => log('debug', 'ignoring SIGINT; the host stops this plugin'));
  process.on('SIGTERM', () => shutdown('SIGTERM'));
}

if (require.main === module) {
  main();
}

module.exports = { parseConfig, makeCertificate, domainOf, ConfigError };
