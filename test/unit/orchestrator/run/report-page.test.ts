/**
 * report.html rendered by a real browser: headless Chromium (Debian's `chromium`, a test-only
 * package of .ci/run) loads each recorded run's page from its run dir, and a probe appended to a
 * copy of the page reads what the browser shows (the visible text, the timeline's laid-out
 * widths, where the links lead) into the DOM Chromium prints.
 */
import assert from "node:assert/strict";
import { execFile, spawnSync } from "node:child_process";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, it } from "node:test";
import { promisify } from "node:util";
import { reportPage, reportPagePath, writeReportPage } from "../../../../orchestrator/run/report-page.ts";
import type { RunReport } from "../../../../orchestrator/run/report.ts";
import { runCli } from "../../../helpers/cli.ts";
import { recordedRuns } from "../../../helpers/past-runs.ts";
import { tempTree } from "../../../helpers/tmp.ts";

/** What the browser showed: the visible text, each timeline segment's width share, each link's target and whether it resolves. */
interface Shown {
  text: string;
  segments: number[][];
  links: { text: string; href: string }[];
}

const PROBE = `<script>
const bars = [...document.querySelectorAll(".timeline")].map((bar) => {
  const width = bar.getBoundingClientRect().width;
  return [...bar.children].map((segment) => Math.round((segment.getBoundingClientRect().width / width) * 1000) / 10);
});
const shown = { text: document.body.innerText, segments: bars, links: [...document.links].map((a) => ({ text: a.textContent, href: a.href })) };
const out = document.createElement("pre");
out.id = "shown";
out.textContent = JSON.stringify(shown);
document.body.append(out);
</script>`;

const execFileAsync = promisify(execFile);

/** Loads the page in headless Chromium and returns what it showed. */
async function render(page: string): Promise<Shown> {
  const probed = page.replace(/\.html$/, ".probed.html");
  await writeFile(probed, (await readFile(page, "utf8")).replace("</body>", `${PROBE}</body>`));
  const { stdout } = await execFileAsync(
    "chromium",
    ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--window-size=1200,900", "--dump-dom", `file://${probed}`],
    { timeout: 90_000, maxBuffer: 16 * 1024 * 1024, env: { ...process.env, HOME: join(page, "..") } },
  );
  const json = /<pre id="shown">([\s\S]*?)<\/pre>/.exec(stdout)?.[1];
  assert.ok(json, `Chromium printed no probe result:\n${stdout.slice(0, 2000)}`);
  return JSON.parse(
    json
      .replace(/&quot;/g, '"')
      .replace(/&lt;/g, "<")
      .replace(/&gt;/g, ">")
      .replace(/&amp;/g, "&"),
  ) as Shown;
}

async function pageOf(report: RunReport): Promise<string> {
  return writeReportPage(report);
}

/** Chromium is a test-only package: without it the page tests are skipped, saying so, except where a browser is required (.ci/run). */
function browserMissing(): string | false {
  const found = spawnSync("chromium", ["--version"], { encoding: "utf8" });
  if (found.status === 0) return false;
  if (process.env.BOMA_IT_REQUIRE_BROWSER === "1") throw new Error("BOMA_IT_REQUIRE_BROWSER=1 but no chromium on PATH: apt-get install chromium");
  return "no chromium on PATH (a test-only package: apt-get install chromium)";
}

describe("report.html, in a real browser", { timeout: 5 * 60_000, skip: browserMissing() }, () => {
  it("a RED finding: the verdict, GREEN's checks before and after side by side, what the reboot removed, the kept VM, the refusals and the diagnostics as links that resolve", async (t) => {
    const tree = await tempTree();
    t.after(tree.remove);
    const { finding } = await recordedRuns(tree.dir);
    const green = finding.scenarios[1]!;
    green.phases = [
      { name: "provision", seconds: 10 },
      { name: "apply", seconds: 30 },
      { name: "reboot", seconds: 60 },
    ];
    await mkdir(green.diagnostics!, { recursive: true });
    await writeFile(join(green.diagnostics!, "nft-ruleset.txt"), "table inet filter {}\n");
    await writeFile(join(green.diagnostics!, "INDEX.txt"), "ok nft-ruleset.txt\n");
    const shown = await render(await pageOf(finding));
    assert.match(shown.text, /^FAIL: askari/);
    assert.match(shown.text, /GREEN broke after the reboot: web through the published port/);
    // One row per check: what it saw before the reboot, then after, as the browser lays out a table row.
    assert.match(
      shown.text,
      /web through the published port\tpass GET http:\/\/10\.234\.7\.10:8080\/: HTTP 200 \(want 200\)\tFAIL GET http:\/\/10\.234\.7\.10:8080\/: no answer within 5 s/,
    );
    assert.match(shown.text, /- iifname "docker0" accept/);
    assert.match(shown.text, /Get in with npm run boma-it -- ssh boma-it-askari-20261202-101500/);
    assert.match(shown.text, /0\.debian\.pool\.ntp\.org\t600/);
    assert.match(shown.text, /boot id 68aeaa18… → b4a817f2…/);
    // The timeline: GREEN's three phases at 10 %, 30 % and 60 % of its bar (RED had none).
    assert.deepEqual(shown.segments, [[10, 30, 60]]);
    const links = shown.links.map((link) => [link.text, link.href]);
    assert.deepEqual(links, [
      ["INDEX.txt", `file://${join(green.diagnostics!, "INDEX.txt")}`],
      ["nft-ruleset.txt", `file://${join(green.diagnostics!, "nft-ruleset.txt")}`],
    ]);
  });

  it("a pass and an exit 4 read as what they are; nothing the run wrote is taken for markup", async (t) => {
    const tree = await tempTree();
    t.after(tree.remove);
    const { passing, fault } = await recordedRuns(tree.dir);
    const shownPass = await render(await pageOf(passing));
    assert.match(shownPass.text, /^PASS: askari/);
    assert.match(shownPass.text, /RED is faithful: it passed before the reboot and broke after it/);
    assert.match(shownPass.text, /GREEN survived the reboot/);
    assert.match(shownPass.text, /VMs of 1 vCPU and 3072 MiB, 2 side by side/, "the VMs' size, as the run gave them");
    assert.doesNotMatch(shownPass.text, /Ended without a verdict|The VM is kept/);
    fault.message = 'after the reboot the VM stalled <script>alert("x")</script>';
    const shownFault = await render(await pageOf(fault));
    assert.match(shownFault.text, /^ERROR: askari/);
    assert.match(shownFault.text, /Ended without a verdict: BootStallError/);
    assert.match(shownFault.text, /Error: no kernel within 150 s/);
    assert.match(shownFault.text, /stalled <script>alert\("x"\)<\/script>/, "shown as text");
  });

  it("report --open makes the page of a run that predates pages and prints where it is; the page needs nothing from outside", async (t) => {
    const tree = await tempTree();
    t.after(tree.remove);
    const { finding } = await recordedRuns(tree.dir);
    const result = await runCli(["report", "20261202-100000", "--open", "--runs-dir", tree.dir]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout.trim(), join(finding.runDir, "report.html"));
    assert.equal(await reportPagePath(finding), join(finding.runDir, "report.html"), "made once, then found");
    const html = reportPage(finding);
    assert.doesNotMatch(html, /(src|href)="(https?:)?\/\//, "no external asset");
    assert.doesNotMatch(html, /<script/, "no script");
  });
});
