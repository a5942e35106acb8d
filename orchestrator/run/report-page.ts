/**
 * `report.html`: a run's result as a page, next to report.json in the run dir. Self-contained (no
 * network, no script, no external asset): the verdict, each scenario's phases on a timeline, its
 * checks before and after the reboot side by side, what the reboot changed, what the allowlist
 * refused, and the diagnostics as links relative to the run dir (the page opens from there).
 */
import { access, readdir, writeFile } from "node:fs/promises";
import { join, relative } from "node:path";
import type { CheckResult } from "../guest/checks.ts";
import { rebootEntryLine, revisionLabel, vmsInWords } from "./past-runs.ts";
import { expectsFailureAfter, redactedReport, vmEntryLine, type RunReport, type ScenarioReport } from "./report.ts";

/** The files of each scenario's diagnostics folder, to link to (read when the page is written). */
export type DiagnosticFiles = Record<string, string[]>;

/** Reads the diagnostics folders a report names. */
export async function diagnosticFiles(report: RunReport): Promise<DiagnosticFiles> {
  const files: DiagnosticFiles = {};
  for (const scenario of report.scenarios) {
    if (!scenario.diagnostics) continue;
    files[scenario.name] = (await readdir(scenario.diagnostics).catch(() => [] as string[])).sort();
  }
  return files;
}

/**
 * Writes report.html into the run dir (0600). Redacted as report.json is, before it is rendered:
 * HTML's escaping would turn a secret holding `"`, `<` or `&` into a form the redaction does not
 * know, so the page is made from the redacted report.
 */
export async function writeReportPage(report: RunReport, redact: (text: string) => string = (text) => text): Promise<string> {
  const file = join(report.runDir, "report.html");
  await writeFile(file, redact(reportPage(redactedReport(report, redact), await diagnosticFiles(report))), { mode: 0o600 });
  return file;
}

/** A past run's page: report.html, made from its report.json first when the run predates pages. */
export async function reportPagePath(report: RunReport): Promise<string> {
  const file = join(report.runDir, "report.html");
  const present = await access(file).then(
    () => true,
    () => false,
  );
  // report.json is already redacted: the page made from it needs nothing more.
  return present ? file : writeReportPage(report);
}

/** The page's HTML. */
export function reportPage(report: RunReport, diagnostics: DiagnosticFiles = {}): string {
  const title = `${report.verdict.toUpperCase()}: ${report.profile}`;
  const body = [
    `<header class="${report.verdict}"><h1>${escape(title)}</h1>`,
    `<p class="message">${escape(report.message)}</p>`,
    `<p class="facts">exit ${report.exitCode} · ${report.wallSeconds} s · started ${escape(report.startedAt.replace("T", " ").slice(0, 19))} UTC · run ${escape(report.runId)} · ${escape(report.accel.toUpperCase())}, ${escape(report.engine)} engine, certs ${escape(report.certs)}${vmsInWords(report) ? ` · ${escape(vmsInWords(report)!)}` : ""}</p></header>`,
    report.error ? errorSection(report.error) : "",
    report.kept
      ? `<section id="kept"><h2>The VM is kept</h2><p>Get in with <code>${escape(report.kept.ssh)}</code>; clean up with <code>npm run boma-it -- down ${escape(report.kept.run)}</code>.</p></section>`
      : "",
    ...report.scenarios.map((scenario) => scenarioSection(report, scenario, diagnostics[scenario.name] ?? [])),
    blockedSection(report),
    `<footer>report.json, junit.xml, run.log and commands.log are in this folder.</footer>`,
  ];
  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${escape(title)}</title>
<style>${STYLE}</style>
</head>
<body>
${body.filter(Boolean).join("\n")}
</body>
</html>
`;
}

function scenarioSection(report: RunReport, scenario: ScenarioReport, files: string[]): string {
  const name = scenario.name.toUpperCase();
  const state = scenario.judged === false ? "unjudged" : scenario.ok ? "ok" : "failed";
  const parts = [
    `<section class="scenario ${state}" id="${scenario.name}">`,
    `<h2>${escape(name)}${escape(revisionLabel(scenario))} <span class="expect">expects to ${scenario.expect === "fail" ? "pass before and fail after the reboot" : "pass before and after the reboot"}</span></h2>`,
    `<p class="outcome">${escape(scenario.outcome)}</p>`,
    scenario.vms ? `<ul class="boots">${scenario.vms.map((vm) => `<li>${escape(vmEntryLine(vm))}</li>`).join("")}</ul>` : "",
    scenario.reboots
      ? `<ul class="boots">${scenario.reboots.map((entry) => `<li>${escape(rebootEntryLine(entry))}</li>`).join("")}</ul>`
      : scenario.bootIds.length === 2 && !scenario.vms
        ? `<p class="boots">boot id ${escape(scenario.bootIds[0].slice(0, 8))}… → ${escape(scenario.bootIds[1].slice(0, 8))}…</p>`
        : "",
    scenario.firstBoot?.kind === "warm" ? `<p class="boots">started from the first boot of ${escape(scenario.firstBoot.from)}</p>` : "",
    timeline(scenario),
    checksTable(scenario),
    diffSection(scenario),
    scenario.notBack ? `<h3>Did not come back</h3><p>${escape(scenario.notBack.reason)}</p><pre>${escape(scenario.notBack.console.join("\n"))}</pre>` : "",
    diagnosticsSection(report, scenario, files),
    `</section>`,
  ];
  return parts.filter(Boolean).join("\n");
}

/** The phases as one bar, each segment as wide as its share of the scenario's time. */
function timeline(scenario: ScenarioReport): string {
  const total = scenario.phases.reduce((sum, phase) => sum + phase.seconds, 0);
  if (total <= 0) return "";
  const segments = scenario.phases
    .map((phase, index) => {
      const share = (phase.seconds / total) * 100;
      return `<span class="phase p${index % 6}" style="width:${share.toFixed(2)}%" title="${escape(phase.name)}: ${phase.seconds} s"></span>`;
    })
    .join("");
  const legend = scenario.phases
    .map((phase, index) => `<li><span class="swatch p${index % 6}"></span>${escape(phase.name)} <b>${phase.seconds} s</b></li>`)
    .join("");
  return `<h3>Phases (${Math.round(total)} s)</h3><div class="timeline">${segments}</div><ol class="legend">${legend}</ol>`;
}

/** Each check once, with what it saw before and after the reboot. */
function checksTable(scenario: ScenarioReport): string {
  if (scenario.checks.length === 0) return "";
  const names = [...new Set(scenario.checks.map((check) => check.name))];
  const cell = (check: CheckResult | undefined) => {
    if (!check) return `<td class="none">not run</td>`;
    const expected = check.stage === "post-reboot" && !check.ok && expectsFailureAfter(scenario, check);
    return `<td class="${check.ok ? "pass" : expected ? "expected" : "fail"}"><b>${check.ok ? "pass" : expected ? "fail (expected)" : "FAIL"}</b> ${escape(check.detail)}</td>`;
  };
  // A column after each kind of reboot when there were several kinds (or one that is not clean).
  const kinds = scenario.reboots?.map((entry) => entry.kind) ?? [undefined];
  const rows = names.map((name) => {
    const of = (stage: string, kind?: string) =>
      scenario.checks.find((check) => check.name === name && check.stage === stage && (stage === "pre-reboot" || check.reboot === kind));
    return `<tr><th scope="row">${escape(name)}</th>${cell(of("pre-reboot"))}${kinds.map((kind) => cell(of("post-reboot", kind))).join("")}</tr>`;
  });
  const heads = kinds.map((kind) => `<th>after ${kind ? `a ${escape(kind)} reboot` : "the reboot"}</th>`).join("");
  return `<h3>Checks</h3><table class="checks"><thead><tr><th>check</th><th>before the reboot</th>${heads}</tr></thead><tbody>${rows.join("")}</tbody></table>`;
}

function diffSection(scenario: ScenarioReport): string {
  const changed = Object.entries(scenario.snapshotDiff ?? {}).filter(([, diff]) => diff.added.length + diff.removed.length > 0);
  if (changed.length === 0)
    return scenario.snapshotDiff ? `<h3>What the reboot changed</h3><p>nothing in the ruleset, listening sockets, containers or failed units</p>` : "";
  const blocks = changed.map(
    ([what, diff]) =>
      `<h4>${escape(what)}</h4><pre class="diff">${[...diff.removed.map((line) => `<del>- ${escape(line)}</del>`), ...diff.added.map((line) => `<ins>+ ${escape(line)}</ins>`)].join("\n")}</pre>`,
  );
  return `<h3>What the reboot changed</h3>${blocks.join("")}`;
}

function diagnosticsSection(report: RunReport, scenario: ScenarioReport, files: string[]): string {
  if (!scenario.diagnostics) return "";
  const base = relative(report.runDir, scenario.diagnostics) || ".";
  const links = files.map((file) => `<li><a href="${escape(encodeURI(`${base}/${file}`))}">${escape(file)}</a></li>`).join("");
  return `<h3>Diagnostics</h3><p><code>${escape(scenario.diagnostics)}</code> (INDEX.txt says what each file is)</p>${links ? `<ul class="files">${links}</ul>` : ""}`;
}

function blockedSection(report: RunReport): string {
  const blocked = report.egress?.blocked ?? [];
  if (blocked.length === 0) return "";
  const rows = blocked.map(
    (attempt) =>
      `<tr><td>${escape(attempt.scenario ?? "")}</td><td>${escape(attempt.name ?? `${attempt.address}:${attempt.port}`)}</td><td>${attempt.count ?? 1}</td></tr>`,
  );
  return `<section id="egress"><h2>What the allowlist refused</h2><table><thead><tr><th>scenario</th><th>name or address</th><th>attempts</th></tr></thead><tbody>${rows.join("")}</tbody></table></section>`;
}

function errorSection(error: NonNullable<RunReport["error"]>): string {
  const causes = error.causes.map((cause) => `<li>${escape(cause)}</li>`).join("");
  return `<section id="error"><h2>Ended without a verdict: ${escape(error.kind)}</h2><pre>${escape(error.message)}</pre>${causes ? `<ul>${causes}</ul>` : ""}</section>`;
}

function escape(text: string): string {
  return text.replace(/[&<>"']/g, (char) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[char]!);
}

const STYLE = `
body{font:15px/1.45 system-ui,sans-serif;margin:0 auto;max-width:72rem;padding:1rem 1.5rem;color:#1d2125}
header{border-left:.5rem solid #888;padding:.2rem 1rem;margin-bottom:1rem}
header.pass{border-color:#2e7d32}header.fail{border-color:#c62828}header.error{border-color:#ef6c00}
h1{margin:.2rem 0;font-size:1.6rem}h2{font-size:1.25rem;margin:1.4rem 0 .4rem}h3{font-size:1.05rem;margin:1rem 0 .3rem}h4{margin:.6rem 0 .2rem}
.facts,.expect,.boots{color:#555}.expect{font-size:.9rem;font-weight:normal}
section.scenario{border-top:1px solid #ddd;padding-top:.4rem}
.timeline{display:flex;height:1.4rem;border-radius:.2rem;overflow:hidden;background:#eee}
.phase{display:block;height:100%}
.p0{background:#5c6bc0}.p1{background:#26a69a}.p2{background:#ffa726}.p3{background:#8d6e63}.p4{background:#ab47bc}.p5{background:#78909c}
.legend{display:flex;flex-wrap:wrap;gap:.3rem 1.2rem;list-style:none;padding:0;margin:.4rem 0;font-size:.9rem}
.swatch{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:-.05rem}
table{border-collapse:collapse;width:100%;font-size:.92rem}th,td{border:1px solid #ddd;padding:.25rem .45rem;text-align:left;vertical-align:top}
td.pass b{color:#2e7d32}td.fail b{color:#c62828}td.expected b{color:#6d4c41}td.none{color:#888}
pre{background:#f6f8fa;padding:.5rem;overflow-x:auto;font-size:.85rem}
del{color:#c62828;text-decoration:none}ins{color:#2e7d32;text-decoration:none}
footer{margin-top:2rem;color:#777;font-size:.85rem}
`;
