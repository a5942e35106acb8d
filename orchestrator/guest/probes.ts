/**
 * One try of each probe kind, and what it saw in one line: from the control host (http, https,
 * tcp, dns through the VM's resolver, as a client on the LAN would) and inside the VM (every kind,
 * through the Machine, as root). checks.ts retries them until they pass or their `within` is up.
 */
import { Resolver } from "node:dns/promises";
import { request as httpRequest, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import { connect, isIP } from "node:net";
import type { PeerCertificate, TLSSocket } from "node:tls";
import { lastLine, quoteArg } from "../../infra/runner.ts";
import type { Check, ProbeKind } from "../profile/schema.ts";
import type { Machine, MachineResult } from "./machine.ts";
import { PROBE_KINDS, CONTROLLER_BY_DEFAULT } from "../profile/schema.ts";

/** One try's verdict and what it saw. */
export interface ProbeOutcome {
  ok: boolean;
  detail: string;
  /** It failed for good (a unit that failed): no later try can pass. */
  final?: true;
}

/** Where an https check's trust comes from, resolved: PEM text, the system's roots, or none. */
export type Trust = { kind: "pem"; pem: string; what: string } | { kind: "system" } | { kind: "insecure" };

/** How long one try of a probe from the control host waits for an answer. */
const HOST_PROBE_MS = 5000;
/** The most of a body or a file a probe reads (a regex is matched against it). */
const READ_LIMIT_BYTES = 1024 * 1024;

/** The kind of probe a check carries (the schema makes sure there is exactly one). */
export function probeKind(check: Check): ProbeKind {
  return PROBE_KINDS.find((kind) => check[kind] !== undefined)!;
}

/** Whether the check runs on the control host (else inside the VM). */
export function runsFromController(check: Check): boolean {
  if (check.from !== undefined) return check.from === "controller";
  return CONTROLLER_BY_DEFAULT.includes(probeKind(check));
}

/** "12h" → milliseconds. */
export function durationMs(text: string): number {
  const unit = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[text.at(-1) as "s" | "m" | "h" | "d"];
  return Number(text.slice(0, -1)) * unit;
}

/** A span of time in words: "11 h 58 min", "3 d 4 h", "42 s". */
function spanText(ms: number): string {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  if (seconds < 120) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 120) return `${minutes} min`;
  const hours = Math.floor(minutes / 60);
  if (hours < 48) return `${hours} h ${minutes % 60} min`;
  return `${Math.floor(hours / 24)} d ${hours % 24} h`;
}

/** A certificate's issuer as text: "CN=Caddy Local Authority - ECC Intermediate, O=…". */
function issuerText(certificate: PeerCertificate): string {
  return Object.entries(certificate.issuer ?? {})
    .map(([key, value]) => `${key}=${Array.isArray(value) ? value.join("+") : String(value)}`)
    .join(", ");
}

/** A line of text cut to a length a report line can hold. */
function clip(text: string, length = 160): string {
  const line = text.replace(/\s+/g, " ").trim();
  return line.length > length ? `${line.slice(0, length)}…` : line;
}

/** The Host header as a browser sends it: the port only when it is not the scheme's own. */
function hostHeader(name: string, port: number, tls: boolean): string {
  const bare = isIP(name) === 6 ? `[${name}]` : name;
  return port === (tls ? 443 : 80) ? bare : `${bare}:${port}`;
}

/** One try of an http or https check from the control host against the VM's address. */
export async function webProbeFromController(check: Check, ip: string, trust: Trust | undefined, now: () => number = Date.now): Promise<ProbeOutcome> {
  const tls = check.https !== undefined;
  const probe = (check.https ?? check.http)!;
  const name = probe.host ?? ip;
  const url = `${tls ? "https" : "http"}://${name}:${probe.port}${probe.path}${probe.host ? ` (at ${ip})` : ""}`;
  const options = {
    host: ip,
    port: probe.port,
    path: probe.path,
    method: "GET",
    headers: { Host: hostHeader(name, probe.port, tls), Connection: "close" },
    timeout: HOST_PROBE_MS,
    ...(tls
      ? {
          // SNI takes a name, never an address.
          ...(probe.host && isIP(probe.host) === 0 ? { servername: probe.host } : {}),
          rejectUnauthorized: trust?.kind !== "insecure",
          ...(trust?.kind === "pem" ? { ca: trust.pem } : {}),
          // Node checks the certificate against the SNI name, or the address when no host is given.
          agent: false as const,
        }
      : { agent: false as const }),
  };
  return new Promise<ProbeOutcome>((resolve) => {
    const request = (tls ? httpsRequest : httpRequest)(options, (response: IncomingMessage) => {
      const chunks: Buffer[] = [];
      let size = 0;
      response.on("data", (chunk: Buffer) => {
        if (size < READ_LIMIT_BYTES) chunks.push(chunk);
        size += chunk.length;
      });
      response.on("error", (error) => resolve({ ok: false, detail: `GET ${url}: ${error.message}` }));
      response.on("end", () => {
        const body = Buffer.concat(chunks).toString("utf8");
        const facts: string[] = [`HTTP ${response.statusCode} (want ${probe.status})`];
        let ok = response.statusCode === probe.status;
        if (probe.body !== undefined) {
          const matches = new RegExp(probe.body, "m").test(body);
          facts.push(matches ? `body matches /${probe.body}/` : `body does not match /${probe.body}/: ${clip(body, 80) || "(empty)"}`);
          ok &&= matches;
        }
        if (tls && check.https) {
          const certificate = (response.socket as TLSSocket).getPeerCertificate?.();
          if (certificate && Object.keys(certificate).length > 0) {
            const issuer = issuerText(certificate);
            if (check.https.issuer !== undefined) {
              const matches = new RegExp(check.https.issuer).test(issuer);
              facts.push(matches ? `issuer ${issuer}` : `issuer ${issuer} does not match /${check.https.issuer}/`);
              ok &&= matches;
            }
            const left = Date.parse(certificate.valid_to) - now();
            if (check.https.validFor !== undefined) {
              const enough = left >= durationMs(check.https.validFor);
              facts.push(`valid ${spanText(left)} more${enough ? "" : ` (want at least ${check.https.validFor})`}`);
              ok &&= enough;
            }
          } else if (check.https.issuer !== undefined || check.https.validFor !== undefined) {
            facts.push("no certificate to read");
            ok = false;
          }
        }
        resolve({ ok, detail: `GET ${url}: ${facts.join("; ")}` });
      });
    });
    request.on("timeout", () => request.destroy(new Error(`no answer within ${HOST_PROBE_MS / 1000} s`)));
    request.on("error", (error: NodeJS.ErrnoException) => {
      const trustWords = trust?.kind === "pem" ? ` (trusting ${trust.what})` : trust?.kind === "system" ? " (trusting the system's roots)" : "";
      const tlsFailure = error.code !== undefined && /CERT|SELF_SIGNED|UNABLE_TO|ERR_TLS|HOSTNAME|ALTNAME/.test(error.code);
      resolve({ ok: false, detail: `GET ${url}: ${tlsFailure ? `certificate refused: ${error.code}${trustWords}` : (error.code ?? error.message)}` });
    });
    request.end();
  });
}

/** One try of a tcp check from the control host. */
export function tcpProbeFromController(ip: string, port: number): Promise<ProbeOutcome> {
  return new Promise((resolve) => {
    const socket = connect({ host: ip, port, timeout: HOST_PROBE_MS });
    const done = (outcome: ProbeOutcome) => {
      socket.destroy();
      resolve(outcome);
    };
    socket.once("connect", () => done({ ok: true, detail: `TCP ${ip}:${port} accepts connections` }));
    socket.once("timeout", () => done({ ok: false, detail: `TCP ${ip}:${port}: no answer within ${HOST_PROBE_MS / 1000} s` }));
    socket.once("error", (error: NodeJS.ErrnoException) => done({ ok: false, detail: `TCP ${ip}:${port}: ${error.code ?? error.message}` }));
  });
}

/** One try of a dns check from the control host: the VM's resolver (port 53 on its address) asked. */
export async function dnsProbeFromController(ip: string, name: string, address: string | undefined, port = 53): Promise<ProbeOutcome> {
  const resolver = new Resolver({ timeout: HOST_PROBE_MS, tries: 1 });
  resolver.setServers([`${ip}:${port}`]);
  const asked = `${name} asked of ${ip}'s resolver`;
  const answers = await Promise.allSettled([resolver.resolve4(name), resolver.resolve6(name)]);
  const addresses = answers.flatMap((answer) => (answer.status === "fulfilled" ? answer.value : []));
  if (addresses.length === 0) {
    const reason = answers.map((answer) => (answer.status === "rejected" ? ((answer.reason as NodeJS.ErrnoException).code ?? "") : "")).find(Boolean);
    return { ok: false, detail: `${asked}: no address (${reason ?? "empty answer"})` };
  }
  return resolvedTo(asked, addresses, address);
}

/** The verdict of a name's addresses against the one expected, if any. */
function resolvedTo(asked: string, addresses: string[], address: string | undefined): ProbeOutcome {
  const list = [...new Set(addresses)].join(", ");
  if (address === undefined) return { ok: true, detail: `${asked}: ${list}` };
  return addresses.includes(address) ? { ok: true, detail: `${asked}: ${list}` } : { ok: false, detail: `${asked}: ${list} (want ${address})` };
}

/**
 * A python3 program that makes one http(s) request to the host itself (127.0.0.1), or to another
 * host of a topology (its address), the name as
 * Host and SNI) and prints the status, then the body: every Ansible-managed host has python3,
 * not every one curl.
 */
function webRequestProgram(check: Check, trust: Trust | undefined, caFileOnVm: string | undefined, address: string): string {
  const tls = check.https !== undefined;
  const probe = (check.https ?? check.http)!;
  const settings = {
    tls,
    port: probe.port,
    path: probe.path,
    host: probe.host ?? address,
    address,
    hostHeader: hostHeader(probe.host ?? address, probe.port, tls),
    trust: trust?.kind ?? "none",
    pem: trust?.kind === "pem" && !caFileOnVm ? trust.pem : null,
    cafile: caFileOnVm ?? null,
    limit: READ_LIMIT_BYTES,
  };
  return `import http.client, json, socket, ssl, sys
s = json.loads(${JSON.stringify(JSON.stringify(settings))})
class Direct(http.client.HTTPSConnection):
    def connect(self):
        raw = socket.create_connection((s["address"], s["port"]), 5)
        self.sock = self._context.wrap_socket(raw, server_hostname=s["host"])
try:
    if s["tls"]:
        if s["trust"] == "insecure":
            context = ssl._create_unverified_context()
        elif s["cafile"]:
            context = ssl.create_default_context(cafile=s["cafile"])
        elif s["pem"]:
            context = ssl.create_default_context(cadata=s["pem"])
        else:
            context = ssl.create_default_context()
        connection = Direct(s["host"], s["port"], context=context, timeout=5)
    else:
        connection = http.client.HTTPConnection(s["address"], s["port"], timeout=5)
    connection.request("GET", s["path"], headers={"Host": s["hostHeader"], "Connection": "close"})
    response = connection.getresponse()
    print(response.status)
    sys.stdout.write(response.read(s["limit"]).decode("utf-8", "replace"))
except Exception as error:
    print("error: %s" % (getattr(error, "reason", None) or error))
    sys.exit(2)
`;
}

/** Where a probe run on another host of a topology goes: the address of the host it is about, and the host it runs on. */
export interface PeerTarget {
  address: string;
  from: string;
}

/** The command and the reading of its output, for a probe that runs inside the VM. */
export interface InsideProbe {
  command: string;
  input?: string;
  read: (result: Pick<MachineResult, "exitCode" | "stdout" | "stderr">) => ProbeOutcome;
}

/**
 * How a check runs inside the VM (as root): its command and what its output means.
 */
export function insideProbe(check: Check, trust: Trust | undefined, caFileOnVm: string | undefined, peer?: PeerTarget): InsideProbe {
  const address = peer?.address ?? "127.0.0.1";
  const where = peer ? `(from ${peer.from})` : "(on the host itself)";
  if (check.unit) {
    const unit = check.unit;
    return {
      command: `systemctl is-active ${quoteArg(unit)}`,
      read: ({ stdout, stderr }) => {
        const state = stdout.trim() || lastLine(stderr);
        if (state === "active") return { ok: true, detail: `${unit} is active` };
        if (state === "failed") return { ok: false, detail: `unit ${unit} failed`, final: true };
        return { ok: false, detail: `${unit} is ${state}` };
      },
    };
  }
  if (check.listen) {
    const { port } = check.listen;
    return {
      command: `ss -Htln ${quoteArg(`sport = :${port}`)}`,
      read: ({ exitCode, stdout }) => {
        const line = stdout.trim().split("\n")[0] ?? "";
        return exitCode === 0 && line !== ""
          ? { ok: true, detail: `listening: ${line.replace(/\s+/g, " ")}` }
          : { ok: false, detail: `nothing listens on TCP port ${port}` };
      },
    };
  }
  if (check.run) {
    return {
      command: check.run,
      read: ({ exitCode, stdout, stderr }) => {
        if (exitCode !== 0) return { ok: false, detail: `exit ${exitCode}: ${lastLine(stderr || stdout)}` };
        const output = lastLine(stdout).slice(0, 200);
        return { ok: true, detail: `exit 0${output ? `: ${output}` : ""}` };
      },
    };
  }
  if (check.http || check.https) {
    const probe = (check.https ?? check.http)!;
    const url = `${check.https ? "https" : "http"}://${probe.host ?? address}:${probe.port}${probe.path} ${where}`;
    return {
      // The probe needs the standard library only: isolated and without the site module, Python
      // starts in about two thirds of its time, and under TCG its start is most of a try.
      command: "python3 -I -S -",
      input: webRequestProgram(check, trust, caFileOnVm, address),
      read: ({ exitCode, stdout, stderr }) => {
        const [first = "", ...rest] = stdout.split("\n");
        if (exitCode !== 0 || !/^\d{3}$/.test(first))
          return { ok: false, detail: `GET ${url}: ${clip(first.replace(/^error: /, "") || lastLine(stderr) || `exit ${exitCode}`)}` };
        const status = Number(first);
        const facts = [`HTTP ${status} (want ${probe.status})`];
        let ok = status === probe.status;
        if (probe.body !== undefined) {
          const body = rest.join("\n");
          const matches = new RegExp(probe.body, "m").test(body);
          facts.push(matches ? `body matches /${probe.body}/` : `body does not match /${probe.body}/: ${clip(body, 80) || "(empty)"}`);
          ok &&= matches;
        }
        return { ok, detail: `GET ${url}: ${facts.join("; ")}` };
      },
    };
  }
  if (check.tcp) {
    const { port } = check.tcp;
    return {
      command: `timeout 5 bash -c ${quoteArg(`exec 3<>/dev/tcp/${address}/${port}`)}`,
      read: ({ exitCode, stderr }) =>
        exitCode === 0
          ? { ok: true, detail: `TCP ${address}:${port} accepts connections ${where}` }
          : {
              ok: false,
              detail: `TCP ${address}:${port} ${where}: ${clip(lastLine(stderr).replace(/^bash: (line \d+: )?/, "")) || `exit ${exitCode}`}`,
            },
    };
  }
  if (check.udp) {
    const { port, address } = check.udp;
    return {
      command: `ss -Hulpn ${quoteArg(`sport = :${port}`)}`,
      read: ({ stdout }) => {
        const sockets = stdout
          .trim()
          .split("\n")
          .filter((line) => line.trim() !== "")
          .map((line) => line.trim().split(/\s+/)[3] ?? "");
        const wanted =
          address === undefined
            ? sockets
            : sockets.filter((local) => local.replace(/%[^:]*/, "").startsWith(address.includes(":") ? `[${address}]` : `${address}:`));
        if (wanted.length > 0) return { ok: true, detail: `UDP listening: ${wanted.join(" ")}` };
        return {
          ok: false,
          detail: sockets.length > 0 ? `UDP port ${port} listens on ${sockets.join(" ")}, not on ${address}` : `nothing listens on UDP port ${port}`,
        };
      },
    };
  }
  if (check.dns) {
    const { name, address } = check.dns;
    return {
      command: `getent ahosts ${quoteArg(name)}`,
      read: ({ exitCode, stdout }) => {
        const addresses = stdout
          .trim()
          .split("\n")
          .map((line) => line.split(/\s+/)[0] ?? "")
          .filter((entry) => isIP(entry) !== 0);
        if (exitCode !== 0 || addresses.length === 0) return { ok: false, detail: `${name} does not resolve on the host itself (getent exit ${exitCode})` };
        return resolvedTo(`${name} on the host itself`, addresses, address);
      },
    };
  }
  if (check.command) {
    const { run, exit, stdout: wanted } = check.command;
    return {
      command: run,
      read: ({ exitCode, stdout, stderr }) => {
        const facts = [`exit ${exitCode} (want ${exit})`];
        let ok = exitCode === exit;
        if (wanted !== undefined) {
          const matches = new RegExp(wanted, "m").test(stdout);
          facts.push(matches ? `stdout matches /${wanted}/` : `stdout does not match /${wanted}/: ${clip(lastLine(stdout), 80) || "(empty)"}`);
          ok &&= matches;
        } else if (!ok) {
          facts.push(clip(lastLine(stderr || stdout), 120));
        }
        return { ok, detail: facts.filter(Boolean).join("; ") };
      },
    };
  }
  if (check.file) {
    const { path, mode, content } = check.file;
    return {
      command: `stat -c %a -- ${quoteArg(path)} && head -c ${READ_LIMIT_BYTES} -- ${quoteArg(path)}`,
      read: ({ exitCode, stdout, stderr }) => {
        if (exitCode !== 0) return { ok: false, detail: `${path}: ${clip(lastLine(stderr).replace(/^stat: /, "")) || `exit ${exitCode}`}` };
        const newline = stdout.indexOf("\n");
        const actualMode = stdout.slice(0, newline).trim().padStart(4, "0");
        const text = stdout.slice(newline + 1);
        const facts = [`${path} exists`];
        let ok = true;
        if (mode !== undefined) {
          const same = actualMode === mode.padStart(4, "0");
          facts.push(`mode ${actualMode}${same ? "" : ` (want ${mode.padStart(4, "0")})`}`);
          ok &&= same;
        }
        if (content !== undefined) {
          const matches = new RegExp(content, "m").test(text);
          facts.push(matches ? `content matches /${content}/` : `content does not match /${content}/`);
          ok &&= matches;
        }
        return { ok, detail: facts.join("; ") };
      },
    };
  }
  if (check.sysctl) {
    const { key, value } = check.sysctl;
    const normal = (text: string) => text.trim().replace(/\s+/g, " ");
    return {
      command: `sysctl -n -- ${quoteArg(key)}`,
      read: ({ exitCode, stdout, stderr }) => {
        if (exitCode !== 0) return { ok: false, detail: `${key}: ${clip(lastLine(stderr).replace(/^sysctl: /, "")) || `exit ${exitCode}`}` };
        const actual = normal(stdout);
        return actual === normal(value) ? { ok: true, detail: `${key} = ${actual}` } : { ok: false, detail: `${key} = ${actual} (want ${normal(value)})` };
      },
    };
  }
  if (check.nft) {
    const { table, chain, matches } = check.nft;
    const what = chain ? `chain ${table} ${chain}` : table ? `table ${table}` : "ruleset";
    return {
      command: `nft list ${chain ? `chain ${table} ${chain}` : table ? `table ${table}` : "ruleset"}`,
      read: ({ exitCode, stdout, stderr }) => {
        if (exitCode !== 0) return { ok: false, detail: `nft list ${what}: ${clip(lastLine(stderr)) || `exit ${exitCode}`}` };
        return new RegExp(matches, "m").test(stdout)
          ? { ok: true, detail: `the ${what} matches /${matches}/` }
          : { ok: false, detail: `the ${what} does not match /${matches}/ (${stdout.split("\n").length} lines)` };
      },
    };
  }
  if (check.container) {
    const { name, state } = check.container;
    return {
      command: `docker inspect --format '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}-{{end}}' -- ${quoteArg(name)}`,
      read: ({ exitCode, stdout, stderr }) => {
        if (exitCode !== 0)
          return { ok: false, detail: `container ${name}: ${clip(lastLine(stderr).replace(/^Error( response from daemon)?: /, "")) || `exit ${exitCode}`}` };
        const [status = "", health = "-"] = stdout.trim().split(/\s+/);
        if (state === "healthy") {
          if (health === "-") return { ok: false, detail: `container ${name} is ${status} and has no healthcheck (want healthy)` };
          return health === "healthy"
            ? { ok: true, detail: `container ${name} is ${status}, healthy` }
            : { ok: false, detail: `container ${name} is ${status}, ${health} (want healthy)` };
        }
        return status === "running"
          ? { ok: true, detail: `container ${name} is running` }
          : { ok: false, detail: `container ${name} is ${status} (want running)` };
      },
    };
  }
  throw new Error(`no inside probe for a ${probeKind(check)} check`);
}

/** What one try of a probe inside the VM saw; a try the harness cut off got no answer. */
export function readInside(probe: InsideProbe, result: MachineResult, tryMs: number): ProbeOutcome {
  if (result.timedOut) return { ok: false, detail: `no answer within ${Math.round(tryMs / 1000)} s` };
  return probe.read(result);
}

/** One try of a probe inside the VM. */
export async function tryInside(machine: Machine, probe: InsideProbe, tryMs: number): Promise<ProbeOutcome> {
  return readInside(probe, await machine.execute(probe.command, { timeoutMs: tryMs, ...(probe.input !== undefined ? { input: probe.input } : {}) }), tryMs);
}
