/**
 * report.json and junit.xml of a run (the command contract). The report is written on every
 * exit path, with whatever was learnt by then.
 */
import { writeFile } from "node:fs/promises";
import type { EgressReport } from "./egress.ts";
import { join } from "node:path";
import { XMLBuilder } from "fast-xml-parser";
import type { CheckResult } from "../guest/checks.ts";
import type { FirstBoot, Phase } from "./provision.ts";
import type { CertificateOutcome } from "../ansible/certs.ts";
import type { SnapshotDiff } from "../guest/snapshot.ts";
import type { HostKeyChange } from "../guest/host-keys.ts";
import type { RebootProof } from "../guest/machine.ts";
import type { RebootKind } from "../profile/schema.ts";
import type { StackOutputs } from "../../infra/plan.ts";

/** One scenario of a run. */
export interface ScenarioReport {
  name: "red" | "green";
  expect: "fail" | "pass";
  /** RED only: it passed before the reboot and failed after it, as the incident did. */
  faithful?: boolean;
  /** Whether the scenario met its expectation. */
  ok: boolean;
  /**
   * False when its result proves nothing: GREEN beside a RED that was not faithful (the run fails
   * on RED; GREEN's own result is reported, not judged). Absent when judged.
   */
  judged?: false;
  /** One sentence: what happened. */
  outcome: string;
  stack: string;
  bootIds: [string, string] | [];
  checks: CheckResult[];
  phases: Phase[];
  readyLagSeconds: (number | null)[];
  /** Per boot, what the guest itself needed to boot (`systemd-analyze time`), when it said. */
  guestBootSeconds: (number | null)[];
  /** Why the first boot was reset (QEMU TCG's text-patching race), if it was: at most once. */
  bootResets: string[];
  /** Whether the VM booted from power-on (saving its first boot for the next VM) or started from a saved first boot. Null: no VM was made. */
  firstBoot: FirstBoot | null;
  /** Per boot, shutdown + firmware + boot loader: power-on or reboot command until the kernel started. */
  beforeKernelSeconds: (number | null)[];
  /** `hostKeyChange`: the VM's SSH host keys a role removed or rotated, followed and re-pinned (see guest/host-keys.ts). */
  apply: { seconds: number; recap: string; tasks: { name: string; seconds: number }[]; hostKeyChange?: HostKeyChange } | null;
  /** le-prod-wildcard only: whether the certificate was reused from the cache or issued (and cached). */
  certificate: CertificateOutcome | null;
  snapshotDiff: Record<string, SnapshotDiff> | null;
  diagnostics: string | null;
  /** The revision of the infrastructure repo applied: the ref asked for (null: the repo on disk) and its commit. */
  ref?: string | null;
  /** Full sha, or "worktree" for the repo on disk. */
  commit?: string;
  /** For "worktree": whether it had uncommitted changes (null: not a git repo). */
  dirty?: boolean | null;
  /** The upgrade path: the revision applied first, and its apply. */
  baseline?: { ref: string; commit: string; apply: { seconds: number; recap: string; tasks: { name: string; seconds: number }[] } | null } | null;
  /** Survival checks (GREEN with `survival`): what was derived from the state before the reboot, and what was left out and why. */
  survival?: { derived: string[]; leftOut: { item: string; why: string }[] } | null;
  /** RED only: the checks that must fail after the reboot, when the profile names them. */
  expectFailing?: string[];
  /** With `idempotence`: a second apply right after the first, and the tasks it changed (strict: a check too). */
  idempotence?: { mode: true | "strict"; changed: string[]; seconds: number } | null;
  /**
   * When the VM did not come back after the reboot although its new kernel ran (a finding, not a
   * fault): why the wait ended, and the console of that boot.
   */
  notBack?: { reason: string; console: string[] };
  /**
   * Each kind of reboot, in order, when the scenario's `reboot` is not one clean reboot (several
   * kinds each start from the same applied state). The scenario's `bootIds`, `snapshotDiff` and
   * `notBack` are the last kind's.
   */
  reboots?: RebootEntry[];
  /**
   * Several hosts: each VM of the scenario in the topology's order, the first being the
   * scenario's own (`stack`, `bootIds`).
   */
  vms?: VmEntry[];
}

/** One VM of a topology's scenario, as report.json keeps it. */
export interface VmEntry {
  /** The inventory host it impersonates. */
  host: string;
  stack: string;
  ip: string;
  /** Before and after its reboot (empty: it did not reboot, or did not come back). */
  bootIds: [string, string] | [];
  /** Its reboot's proof, when it rebooted and came back. */
  proof?: ReportedProof;
  /** Why it did not come back after its reboot (a finding). */
  notBack?: string;
  /** The topology's extra links it is at: the guest's interface, the host at the other end, its address there. */
  links?: { interface: string; peer: string; address: string }[];
}

/** A VM's entry before its reboot, from its stack's outputs. */
export function vmEntryOf(outputs: StackOutputs): VmEntry {
  return {
    host: outputs.host,
    stack: outputs.runId,
    ip: outputs.ip,
    bootIds: [],
    ...(outputs.links ? { links: outputs.links.map((link) => ({ interface: link.interface, peer: link.peer, address: link.address })) } : {}),
  };
}

/** A reboot's proof as report.json keeps it. */
export interface ReportedProof {
  bootIds: [string, string];
  seconds: number;
  /** power-loss: what the old boot's journal on the disk says of its end. */
  previousBootEnd?: string;
  /** soft: systemd's SoftRebootsCount before and after; the boot id stays. */
  softReboots?: [number, number];
  userspaceOnly?: true;
}

/** What one VM of a topology's scenario came to, in one line: its host, address and reboot. */
export function vmEntryLine(vm: VmEntry): string {
  const reboot = vm.notBack ? `did not come back: ${vm.notBack}` : vm.proof ? provenInWords(vm.proof) : "not rebooted";
  const links = (vm.links ?? []).map((link) => `, ${link.interface} ${link.address} to ${link.peer}`).join("");
  return `${vm.host} (${vm.ip}${links}): ${reboot}`;
}

/** A reboot's proof as the report keeps it (see {@link ReportedProof}). */
export function reportedProof(proof: RebootProof): ReportedProof {
  return {
    bootIds: [proof.bootIdBefore, proof.bootIdAfter],
    seconds: proof.seconds,
    ...(proof.previousBootEnd ? { previousBootEnd: proof.previousBootEnd } : {}),
    ...(proof.softReboots ? { softReboots: proof.softReboots, userspaceOnly: true } : {}),
  };
}

/** What a kind of reboot did, as a verb: the log's and a verb's outcome begin with it. */
export function rebootedAs(kind: RebootKind): string {
  return kind === "soft" ? "soft-rebooted" : kind === "power-loss" ? "powered off without a shutdown and on again" : "rebooted";
}

/**
 * How a reboot was proven, in the one wording the log, a verb's outcome and `report` share: the
 * boot ids (a soft reboot's unchanged, with its counter), the seconds, and a power loss's old boot.
 */
export function provenInWords(proof: ReportedProof): string {
  const [before, after] = proof.bootIds;
  if (proof.softReboots) return `userspace only, boot id ${after.slice(0, 8)}… unchanged, soft reboots ${proof.softReboots.join(" → ")}, in ${proof.seconds} s`;
  const ids = `boot id ${before.slice(0, 8)}… → ${after.slice(0, 8)}… in ${proof.seconds} s`;
  return proof.previousBootEnd ? `${ids}; the old boot: ${proof.previousBootEnd}` : ids;
}

/** One kind of reboot of a scenario: its proof, its checks after it and whether it met the scenario's expectation. */
export interface RebootEntry {
  kind: RebootKind;
  /** What the checks after it are expected to do: GREEN's pass; RED's fail, or pass where RED must survive that kind. */
  expect: "fail" | "pass";
  ok: boolean;
  /** Null when the VM did not come back. */
  proof: ReportedProof | null;
  checks: CheckResult[];
  snapshotDiff: Record<string, SnapshotDiff> | null;
  notBack?: { reason: string; console: string[] };
  /** A failed kind's bundle, taken before the VM went back to the applied state (null: none, or the last kind: the scenario's). */
  diagnostics: string | null;
}

/** What ended a command that was no verdict (exit 3, 4 or 130): the error and its causes. */
export interface RunError {
  kind: string;
  message: string;
  causes: string[];
}

/**
 * How a command on test VMs ended, the same for a run (report.json) and a verb on a kept VM (its
 * result.json): lifecycle.ts fills it in on every exit path.
 */
export interface CommandEnding {
  /** pass: what was asked held; fail: the system under test did not meet it; error: something else ended the command. */
  verdict: "pass" | "fail" | "error";
  exitCode: number;
  /** What it came to (a run's: every scenario's outcome, or its failed ones'; an error's whole message). */
  message: string;
  /** Set when it ended without a verdict (verdict "error"). */
  error: RunError | null;
  startedAt: string;
  finishedAt: string;
  wallSeconds: number;
}

/** A whole run (report.json). */
export interface RunReport extends CommandEnding {
  runId: string;
  profile: string;
  host: string;
  engine: string;
  accel: string;
  /** The size its VMs got: the profile's `vm`, or fewer vCPUs each where TCG ran them side by side (absent in reports made before it was recorded). */
  vm?: { vcpus: number; memoryMiB: number; diskGiB: number };
  certs: string;
  /** What the VM was allowed to reach, and what the allowlist refused it (run/egress.ts). */
  egress: EgressReport;
  scenarios: ScenarioReport[];
  /** How many of its scenarios ran at the same time (2: RED and GREEN side by side); absent before any ran. */
  scenariosAtOnce?: number;
  readyLagSeconds: (number | null)[];
  diagnostics: string | null;
  /** The harness process itself (not its children): peak resident memory. */
  harness: { peakRssMiB: number };
  kept: { run: string; ssh: string; reap: string } | null;
  runDir: string;
}

/** The harness process's peak resident memory so far, in MiB. */
export function harnessPeakRssMiB(): number {
  // maxRSS is in KiB.
  return Math.round(process.resourceUsage().maxRSS / 102.4) / 10;
}

/**
 * Writes report.json and junit.xml into the run dir (0600), redacted of the run's secrets in
 * every form (a check's detail or an apply's failure may quote one).
 */
export async function writeReport(report: RunReport, redact: (text: string) => string = (text) => text): Promise<void> {
  await writeFile(join(report.runDir, "report.json"), redact(`${JSON.stringify(report, null, 2)}\n`), { mode: 0o600 });
  // Redacted before it is rendered: XML escaping (a quote as &quot;) would hide a secret from the redaction.
  await writeFile(join(report.runDir, "junit.xml"), redact(junitXml(redactedReport(report, redact))), { mode: 0o600 });
}

/** The report with every text in it redacted (a copy; keys and numbers as they are). */
export function redactedReport(report: RunReport, redact: (text: string) => string): RunReport {
  const walk = (value: unknown): unknown => {
    if (typeof value === "string") return redact(value);
    if (Array.isArray(value)) return value.map(walk);
    if (value !== null && typeof value === "object") return Object.fromEntries(Object.entries(value).map(([key, inner]) => [key, walk(inner)]));
    return value;
  };
  return walk(report) as RunReport;
}

/** JUnit XML: a suite per scenario, a case per check and stage, plus the reboot proof. */
export function junitXml(report: RunReport): string {
  const builder = new XMLBuilder({ ignoreAttributes: false, attributeNamePrefix: "@", format: true, indentBy: "  " });
  const suites = report.scenarios.map((scenario) => {
    const cases: Record<string, unknown>[] = scenario.checks.map((check) => {
      // RED expects its checks to fail after the reboot (after each kind it must break under): a
      // failure there is the expected outcome.
      const expectedFailure = check.stage === "post-reboot" && expectsFailureAfter(scenario, check);
      const testcase: Record<string, unknown> = {
        "@classname": `${report.host}.${scenario.name}.${check.stage}${check.reboot ? `.${check.reboot}` : ""}`,
        "@name": check.name,
        "@time": check.seconds.toFixed(1),
      };
      if (!check.ok && !expectedFailure) testcase.failure = { "@message": check.detail, "#text": check.detail };
      if (check.ok && expectedFailure) testcase["system-out"] = `passed after the reboot although RED expects a failure: ${check.detail}`;
      return testcase;
    });
    // A case per kind of reboot: whether the scenario met its expectation under it.
    for (const entry of scenario.reboots ?? []) {
      const outcome = entry.notBack ? `did not come back: ${entry.notBack.reason}` : entry.ok ? "as expected" : "not as expected";
      cases.push({
        "@classname": `${report.host}.${scenario.name}.${entry.kind}`,
        "@name": entry.expect === "fail" ? `RED is faithful under a ${entry.kind} reboot` : `survives a ${entry.kind} reboot`,
        "@time": (entry.proof?.seconds ?? 0).toFixed(1),
        ...(entry.ok ? {} : { failure: { "@message": outcome, "#text": outcome } }),
      });
    }
    cases.push({
      "@classname": `${report.host}.${scenario.name}`,
      "@name": scenario.expect === "fail" ? "RED is faithful (passes before, fails after the reboot)" : "survives the reboot",
      "@time": scenario.phases.reduce((sum, phase) => sum + phase.seconds, 0).toFixed(1),
      // Not judged (GREEN beside an unfaithful RED): neither a pass nor a failure of its own.
      ...(scenario.judged === false
        ? { skipped: { "@message": scenario.outcome } }
        : scenario.ok
          ? {}
          : { failure: { "@message": scenario.outcome, "#text": scenario.outcome } }),
    });
    // Which revision it applied: on the suite, for dashboards that group by it.
    const properties = [
      { "@name": "ref", "@value": scenario.ref ?? "worktree" },
      { "@name": "commit", "@value": scenario.commit ?? "worktree" },
      ...(scenario.commit === "worktree" && scenario.dirty !== undefined ? [{ "@name": "dirty", "@value": String(scenario.dirty) }] : []),
      ...(scenario.baseline ? [{ "@name": "baseline", "@value": `${scenario.baseline.ref} ${scenario.baseline.commit}` }] : []),
    ];
    return {
      "@name": `${report.profile}.${scenario.name}`,
      properties: { property: properties },
      "@tests": String(cases.length),
      "@failures": String(cases.filter((testcase) => testcase.failure).length),
      "@errors": "0",
      "@skipped": String(cases.filter((testcase) => testcase.skipped).length),
      "@time": scenario.phases.reduce((sum, phase) => sum + phase.seconds, 0).toFixed(1),
      testcase: cases,
    };
  });
  return `<?xml version="1.0" encoding="UTF-8"?>\n${
    builder.build({
      testsuites: { "@name": `boma-it ${report.profile}`, "@time": report.wallSeconds.toFixed(1), testsuite: suites },
    }) as string
  }`;
}

/** Whether a scenario expects a check to fail after its reboot: RED does, but after a kind it must survive. */
export function expectsFailureAfter(scenario: Pick<ScenarioReport, "expect" | "reboots">, check: Pick<CheckResult, "reboot">): boolean {
  if (scenario.expect !== "fail") return false;
  const entry = check.reboot ? scenario.reboots?.find((candidate) => candidate.kind === check.reboot) : undefined;
  return entry ? entry.expect === "fail" : true;
}

/** A scenario's report before anything happened: every list empty, not ok, with `outcome` until it says otherwise. */
export function emptyScenarioReport(scenario: { name: "red" | "green"; expect: "fail" | "pass" }, stack: string, outcome = "did not finish"): ScenarioReport {
  return {
    name: scenario.name,
    expect: scenario.expect,
    ...(scenario.expect === "fail" ? { faithful: false } : {}),
    ok: false,
    outcome,
    stack,
    bootIds: [],
    checks: [],
    phases: [],
    readyLagSeconds: [],
    guestBootSeconds: [],
    beforeKernelSeconds: [],
    bootResets: [],
    firstBoot: null,
    apply: null,
    certificate: null,
    snapshotDiff: null,
    diagnostics: null,
  };
}
