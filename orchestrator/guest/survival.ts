/**
 * Survival checks: what a host must still be after its reboot, derived from what it was right
 * before it (no profile needs to say it). Every TCP/UDP listener (address, port, owning unit) is
 * there again; every unit that was active is active; no unit failed that had not failed before;
 * every published container port that answered from the host answers again; every port that
 * answered a TLS handshake from the host (an https endpoint) answers one again; the nftables
 * ruleset in force is the one that was (a difference is reported; it fails only with `survival:
 * strict`).
 * Noise that changes across any boot is left out by rules that say why, and what was left out is
 * listed. After the reboot they are retried together, within their `within`, like written checks.
 */
import { connect } from "node:net";
import { connect as tlsConnect } from "node:tls";
import type { CheckResult } from "./checks.ts";
import type { Machine } from "./machine.ts";
import { WaitError } from "../retry.ts";

/** A listening socket: protocol, local address and port, the unit that owns it (when known). */
export interface Listener {
  proto: "tcp" | "udp";
  address: string;
  port: number;
  unit: string;
}

/** The state survival checks are derived from, and checked against. */
export interface SurvivalState {
  listeners: Listener[];
  /** Active services and sockets, with whether each is started on demand (D-Bus or socket activation). */
  active: { unit: string; onDemand: boolean }[];
  failed: string[];
  /** Units systemd skipped on this boot: it checked their start conditions, and one did not hold (ConditionResult=no). */
  skipped: string[];
  /** Published container ports: host port, protocol, container. */
  published: { port: number; proto: "tcp" | "udp"; container: string }[];
  /** `nft list ruleset` without counters. */
  ruleset: string;
}

/** Something left out of the derived checks, and why. */
export interface LeftOut {
  item: string;
  why: string;
}

/** One derived check: its name (as report.json and junit show it) and whether a state satisfies it. */
export interface DerivedCheck {
  name: string;
  /**
   * The check's verdict on a state and the host's view of the VM (the TCP ports that accepted a
   * connection, the ports that answered a TLS handshake): ok and what was seen.
   */
  holds(state: SurvivalState, answering: ReadonlySet<number>, speakingTls?: ReadonlySet<number>): { ok: boolean; detail: string };
  /** Published ports are probed from the harness host: which port this check needs answered. */
  port?: number;
  /** An https endpoint: the port that must answer a TLS handshake from the harness host. */
  tlsPort?: number;
}

/** sshd's port, which the harness itself logs in through. */
const SSH_PORT = 22;

/** The first port the kernel hands to a client (`net.ipv4.ip_local_port_range`'s usual start). */
const EPHEMERAL_PORT_START = 32768;

/**
 * What is read from the guest in one command: listeners with owning units, active units (with
 * what starts them on demand), failed units, units systemd skipped on this boot because a start
 * condition of their own did not hold (checked at a time: a unit never started also says
 * ConditionResult=no), published ports, the ruleset. Unit names come from the
 * name column (a failed or missing unit's line starts with a bullet); the properties of all
 * units come from one `systemctl show` each (a call per unit costs seconds under TCG).
 */
export const OBSERVE_SURVIVAL = String.raw`
units() { systemctl list-units --plain --no-legend --no-pager "$@" | awk '{ n = ($1 ~ /\.[a-z]+$/) ? $1 : $2; if (n ~ /\.(service|socket|mount|automount|swap|target|path|timer|slice|scope|device)$/) print n }'; }
show() { awk 'BEGIN { RS = ""; FS = "\n" } { delete p; for (i = 1; i <= NF; i++) { at = index($i, "="); p[substr($i, 1, at - 1)] = substr($i, at + 1) } print p["Id"] "|" p["TriggeredBy"] "|" p["BusName"] "|" p["ConditionResult"] "|" p["ConditionTimestampMonotonic"] }'; }
ss -Htlnup | while read -r proto state recvq sendq local peer users; do
  pid=$(printf '%s' "$users" | sed -n 's/.*pid=\([0-9]*\).*/\1/p')
  unit=""; [ -n "$pid" ] && unit=$(ps -o unit= -p "$pid" 2>/dev/null | tr -d ' ')
  echo "listen|$proto|$local|$unit"
done
active=$(units --type=service,socket --state=active)
[ -z "$active" ] || systemctl show --no-pager -p Id -p TriggeredBy -p BusName $active | show | awk -F'|' '{ print "active|" $1 "|" $2 "|" $3 }'
inactive=$(units --type=service --all --state=inactive)
[ -z "$inactive" ] || systemctl show --no-pager -p Id -p ConditionResult -p ConditionTimestampMonotonic $inactive | show | awk -F'|' '$4 == "no" && $5 != "" && $5 != "0" { print "skipped|" $1 }'
units --failed | sed 's/^/failed|/'
docker ps --format '{{.Names}}|{{.Ports}}' 2>/dev/null | sed 's/^/published|/'
echo "ruleset-begin"
nft list ruleset 2>/dev/null | sed -E 's/ ?counter packets [0-9]+ bytes [0-9]+//'
`;

/** Reads the survival state of the guest now. */
export async function observeSurvival(machine: Machine): Promise<SurvivalState> {
  const result = await machine.execute(OBSERVE_SURVIVAL, { timeoutMs: 120_000 });
  return parseSurvival(result.stdout);
}

/** Parses what {@link OBSERVE_SURVIVAL} printed. */
export function parseSurvival(text: string): SurvivalState {
  const [head = "", ruleset = ""] = text.split("ruleset-begin\n");
  const state: SurvivalState = { listeners: [], active: [], failed: [], skipped: [], published: [], ruleset: ruleset.trim() };
  for (const line of head.split("\n")) {
    const [kind, ...fields] = line.split("|");
    if (kind === "listen") {
      const [proto, local = "", unit = ""] = fields;
      const at = local.lastIndexOf(":");
      const port = Number(local.slice(at + 1));
      if ((proto === "tcp" || proto === "udp") && Number.isInteger(port))
        state.listeners.push({ proto, address: local.slice(0, at), port, unit: unit === "-" ? "" : unit });
    } else if (kind === "active" && fields[0]) {
      state.active.push({ unit: fields[0], onDemand: (fields[1] ?? "") !== "" || (fields[2] ?? "") !== "" });
    } else if (kind === "failed" && fields[0]) state.failed.push(fields[0]);
    else if (kind === "skipped" && fields[0]) state.skipped.push(fields[0]);
    else if (kind === "published" && fields[0]) {
      for (const match of (fields[1] ?? "").matchAll(/(?:[\d.]+|\[::\]):(\d+)->\d+\/(tcp|udp)/g)) {
        const port = Number(match[1]);
        const proto = match[2] as "tcp" | "udp";
        if (!state.published.some((entry) => entry.port === port && entry.proto === proto)) state.published.push({ port, proto, container: fields[0] });
      }
    }
  }
  return state;
}

/** Units that come and go with the harness itself or with every boot, by name. */
function harnessOrBootUnit(unit: string): string | undefined {
  if (/^user(-runtime-dir)?@\d+\.service$/.test(unit)) return "the harness's own SSH login runs it (a user manager)";
  if (/^run-/.test(unit)) return "a transient unit (systemd-run, an apply's one-off)";
  return undefined;
}

/**
 * The checks a state right before the reboot implies, and what was left out of them and why.
 * `answering`: the published ports that answered from the harness host then (only those must again).
 */
export function deriveSurvivalChecks(
  before: SurvivalState,
  answering: ReadonlySet<number>,
  strict: boolean,
  speakingTls: ReadonlySet<number> = new Set(),
): { checks: DerivedCheck[]; leftOut: LeftOut[] } {
  const checks: DerivedCheck[] = [];
  const leftOut: LeftOut[] = [];
  const describe = (listener: Listener) => `${listener.proto} ${listener.address}:${listener.port}${listener.unit ? ` (${listener.unit})` : ""}`;
  for (const listener of before.listeners) {
    if (listener.port >= EPHEMERAL_PORT_START) {
      leftOut.push({ item: describe(listener), why: `an ephemeral port (${EPHEMERAL_PORT_START} and up: the kernel picks another each boot)` });
      continue;
    }
    const why = listener.unit ? harnessOrBootUnit(listener.unit) : undefined;
    if (why) {
      leftOut.push({ item: describe(listener), why });
      continue;
    }
    checks.push({
      name: `survives: ${describe(listener)}`,
      holds: (state) => {
        const found = state.listeners.find(
          (candidate) => candidate.proto === listener.proto && candidate.address === listener.address && candidate.port === listener.port,
        );
        return found
          ? { ok: true, detail: `listening: ${describe(found)}` }
          : { ok: false, detail: `nothing listens on ${listener.proto} ${listener.address}:${listener.port}` };
      },
    });
  }
  const failedBefore = new Set(before.failed);
  for (const { unit, onDemand } of before.active) {
    const why =
      harnessOrBootUnit(unit) ??
      (onDemand && unit.endsWith(".service")
        ? "started on demand (D-Bus or socket activation): it need not run after a boot until something asks for it"
        : undefined);
    if (why) {
      leftOut.push({ item: unit, why });
      continue;
    }
    checks.push({
      name: `survives: ${unit} active`,
      holds: (state) => {
        if (state.active.some((candidate) => candidate.unit === unit)) return { ok: true, detail: `${unit} is active` };
        if (state.failed.includes(unit)) return { ok: false, detail: `${unit} failed` };
        // The unit's own definition says when it runs (first-boot work such as committing the
        // machine id; a condition on a file or the hardware): reported, as a ruleset change is.
        if (state.skipped.includes(unit)) {
          return {
            ok: !strict,
            detail: `${unit} was skipped on this boot: a start condition of its own did not hold (ConditionResult=no)${strict ? "" : "; reported, fails only with survival: strict"}`,
          };
        }
        return { ok: false, detail: `${unit} is not active` };
      },
    });
  }
  checks.push({
    name: "survives: no unit failed that had not failed before",
    holds: (state) => {
      const fresh = state.failed.filter((unit) => !failedBefore.has(unit) && !harnessOrBootUnit(unit));
      return fresh.length === 0 ? { ok: true, detail: "no new failed unit" } : { ok: false, detail: `failed now: ${fresh.join(", ")}` };
    },
  });
  for (const published of before.published) {
    const what = `published port ${published.port}/${published.proto} (${published.container})`;
    if (published.proto !== "tcp" || !answering.has(published.port)) {
      leftOut.push({
        item: what,
        why: published.proto !== "tcp" ? "UDP: no answer to expect from a probe" : "it did not answer from the host before the reboot either",
      });
      continue;
    }
    checks.push({
      name: `survives: ${what} answers from the host`,
      port: published.port,
      holds: (_state, now) =>
        now.has(published.port)
          ? { ok: true, detail: `TCP ${published.port} accepts connections` }
          : { ok: false, detail: `TCP ${published.port} does not answer from the host` },
    });
  }
  for (const port of [...speakingTls].sort((a, b) => a - b)) {
    const owner = before.listeners.find((listener) => listener.proto === "tcp" && listener.port === port)?.unit;
    checks.push({
      name: `survives: TLS on port ${port}${owner ? ` (${owner})` : ""} answers from the host`,
      tlsPort: port,
      holds: (_state, _answering, now = new Set()) =>
        now.has(port)
          ? { ok: true, detail: `port ${port} answers a TLS handshake` }
          : { ok: false, detail: `port ${port} does not answer a TLS handshake from the host (it did before the reboot)` },
    });
  }
  checks.push({
    name: `survives: the nftables ruleset in force${strict ? "" : " (reported, fails only with survival: strict)"}`,
    holds: (state) => {
      const diff = rulesetDiff(before.ruleset, state.ruleset);
      if (diff.added.length === 0 && diff.removed.length === 0) return { ok: true, detail: "the same ruleset as before the reboot" };
      const detail = `differs: ${[...diff.removed.map((line) => `- ${line}`), ...diff.added.map((line) => `+ ${line}`)].slice(0, 8).join("; ")}`;
      return { ok: !strict, detail };
    },
  });
  return { checks, leftOut };
}

/** Lines of a ruleset that went and came (order-insensitive, blank lines and Docker's per-boot handles ignored). */
export function rulesetDiff(before: string, after: string): { added: string[]; removed: string[] } {
  const lines = (text: string) =>
    new Set(
      text
        .split("\n")
        .map((line) => line.trim())
        .filter(Boolean),
    );
  const was = lines(before);
  const now = lines(after);
  return { added: [...now].filter((line) => !was.has(line)), removed: [...was].filter((line) => !now.has(line)) };
}

/** Which of `ports` accept a TCP connection on `ip` now. */
export async function answeringPorts(ip: string, ports: readonly number[]): Promise<Set<number>> {
  const results = await Promise.all(
    ports.map(
      (port) =>
        new Promise<number | undefined>((resolve) => {
          const socket = connect({ host: ip, port, timeout: 5000 });
          const done = (open: boolean) => (socket.destroy(), resolve(open ? port : undefined));
          socket.once("connect", () => done(true));
          socket.once("timeout", () => done(false));
          socket.once("error", () => done(false));
        }),
    ),
  );
  return new Set(results.filter((port): port is number => port !== undefined));
}

/** Whether an address a listener is bound to can be reached from outside the VM (not a loopback one). */
function reachableFromOutside(address: string): boolean {
  return !/^(127\.|\[::1\]|::1$|\[::ffff:127\.)/.test(address);
}

/** The TCP ports of `state` that a client outside the VM could reach: where an https endpoint may listen. */
export function tlsCandidates(state: SurvivalState): number[] {
  // sshd is never an https endpoint, and a handshake it cannot read is a failed login to a ban list.
  const ports = state.listeners.filter(
    (listener) => listener.proto === "tcp" && listener.port !== SSH_PORT && listener.port < EPHEMERAL_PORT_START && reachableFromOutside(listener.address),
  );
  return [...new Set(ports.map((listener) => listener.port))].sort((a, b) => a - b);
}

/**
 * Which of `ports` on `ip` answer a TLS handshake now: it completes (whatever the certificate), or
 * the server answers it with a TLS alert (a server that wants a name it was not given still speaks
 * TLS). A plain-text answer, a reset or silence is not TLS.
 */
export async function tlsPortsAnswering(ip: string, ports: readonly number[], timeoutMs = 5000): Promise<Set<number>> {
  const results = await Promise.all(
    ports.map(
      (port) =>
        new Promise<number | undefined>((resolve) => {
          const socket = tlsConnect({ host: ip, port, rejectUnauthorized: false });
          // A deadline for the whole handshake: a server that drips bytes never times out idle.
          const deadline = setTimeout(() => done(false), timeoutMs);
          function done(tls: boolean) {
            clearTimeout(deadline);
            socket.destroy();
            resolve(tls ? port : undefined);
          }
          socket.once("secureConnect", () => done(true));
          // An alert, or a refusal of the missing name (nginx's ssl_reject_handshake), is TLS speaking.
          socket.on("error", (error: NodeJS.ErrnoException) => done(/^ERR_SSL_.*(ALERT|UNRECOGNIZED_NAME)/.test(error.code ?? "")));
        }),
    ),
  );
  return new Set(results.filter((port): port is number => port !== undefined));
}

/**
 * Runs the derived checks after the reboot, all on one observation per try, until every one holds
 * or `withinMs` is up; each result says when it first held or what it last saw.
 */
export async function runSurvivalChecks(
  checks: readonly DerivedCheck[],
  machine: Machine,
  ip: string,
  withinMs: number,
  onResult?: (result: CheckResult) => void,
): Promise<CheckResult[]> {
  const started = machine.now();
  const heldAt = new Map<string, number>();
  let last = new Map<string, { ok: boolean; detail: string }>();
  const ports = [...new Set(checks.map((check) => check.port).filter((port): port is number => port !== undefined))];
  const tlsPorts = [...new Set(checks.map((check) => check.tlsPort).filter((port): port is number => port !== undefined))];
  try {
    await machine.waitFor(
      `${checks.length} survival checks to hold`,
      withinMs,
      async () => {
        const [state, answering, speakingTls] = await Promise.all([observeSurvival(machine), answeringPorts(ip, ports), tlsPortsAnswering(ip, tlsPorts)]);
        last = new Map(checks.map((check) => [check.name, check.holds(state, answering, speakingTls)]));
        for (const [name, verdict] of last) if (verdict.ok && !heldAt.has(name)) heldAt.set(name, machine.now());
        const failing = [...last].filter(([, verdict]) => !verdict.ok);
        return failing.length === 0
          ? { done: true, value: undefined }
          : {
              done: false,
              seen: failing
                .map(([name, verdict]) => `${name.replace(/^survives: /, "")}: ${verdict.detail}`)
                .slice(0, 3)
                .join("; "),
            };
      },
      { intervalMs: 2000, maxIntervalMs: 5000 },
    );
  } catch (error) {
    if (!(error instanceof WaitError && error.timedOut)) throw error;
  }
  return checks.map((check) => {
    const verdict = last.get(check.name) ?? { ok: false, detail: "never observed" };
    const result: CheckResult = {
      name: check.name,
      stage: "post-reboot",
      ok: verdict.ok,
      detail: verdict.detail,
      seconds: Math.round(((verdict.ok ? (heldAt.get(check.name) ?? machine.now()) : machine.now()) - started) / 100) / 10,
    };
    onResult?.(result);
    return result;
  });
}
