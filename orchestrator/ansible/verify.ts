/**
 * What a playbook's task outcomes say beyond pass or fail: a verify playbook's asserts and failed
 * tasks as checks (Molecule's `verify` step), and the tasks a second apply changed (its
 * idempotence step). Pure: the outcomes come from boma-it's callback (apply.ts).
 */
import { VERIFY_CHECK_PREFIX } from "../profile/schema.ts";
import type { PlaybookRun } from "./apply.ts";
import type { TaskOutcome } from "./task-records.ts";

/** One check a verify playbook made: named after its task. */
export interface VerifyFinding {
  name: string;
  ok: boolean;
  detail: string;
}

const ASSERT_ACTIONS = new Set(["assert", "ansible.builtin.assert", "ansible.legacy.assert"]);

/** Whether a task is an `assert`. */
function isAssert(outcome: TaskOutcome): boolean {
  return ASSERT_ACTIONS.has(outcome.action);
}

/** A failed task's message in one line, with an assert's failed condition when the message does not say it. */
function failureDetail(outcome: TaskOutcome): string {
  const message = outcome.msg.replace(/\s+/g, " ").trim() || "failed";
  const condition = outcome.assertion && !message.includes(outcome.assertion) ? ` (${outcome.assertion})` : "";
  return `${message}${condition}${outcome.ignored ? " (the play ignored it and went on)" : ""}`;
}

/**
 * The checks a verify playbook's run made, in the order its tasks ran: each `assert` (passed or
 * failed) and each other task that failed, named `verify: <task>` (a name that comes twice is
 * numbered). A failure the play ignored (`ignore_errors`, the way a verify playbook runs every
 * assert instead of stopping at the first) is still a failed check. A run that failed without a
 * failed task (a syntax error, a missing role) is one failed check named after the playbook; a
 * run with no assert and no failure is one passing check named after it.
 */
export function verifyFindings(run: Pick<PlaybookRun, "failed" | "why" | "outcomes">, playbook: string): VerifyFinding[] {
  const findings: VerifyFinding[] = [];
  const seen = new Map<string, number>();
  const named = (task: string) => {
    const count = (seen.get(task) ?? 0) + 1;
    seen.set(task, count);
    return `${VERIFY_CHECK_PREFIX}${task}${count > 1 ? ` (${count})` : ""}`;
  };
  for (const outcome of run.outcomes) {
    if (outcome.status === "failed" || outcome.status === "unreachable") {
      findings.push({ name: named(outcome.task), ok: false, detail: failureDetail(outcome) });
    } else if (isAssert(outcome) && outcome.status !== "skipped") {
      findings.push({ name: named(outcome.task), ok: true, detail: outcome.msg.replace(/\s+/g, " ").trim() || "All assertions passed" });
    }
  }
  if (run.failed && !findings.some((finding) => !finding.ok)) {
    findings.push({ name: `${VERIFY_CHECK_PREFIX}${playbook}`, ok: false, detail: `the verify playbook failed: ${run.why.trim() || "no task failed"}` });
  } else if (findings.length === 0) {
    const ran = run.outcomes.filter((outcome) => outcome.status !== "skipped").length;
    findings.push({ name: `${VERIFY_CHECK_PREFIX}${playbook}`, ok: true, detail: `${ran} task(s) ran, none failed (it has no assert)` });
  }
  return findings;
}

/**
 * The tasks (and handlers) that reported a change, in the order they ran, each once. With the
 * play's recap line, a change the recap counts but no record names (records lost) is still one:
 * "nothing changed" is never said on missing evidence.
 */
export function changedTasks(outcomes: readonly TaskOutcome[], recap?: string): string[] {
  const names = [
    ...new Set(outcomes.filter((outcome) => outcome.status === "changed").map((outcome) => (outcome.handler ? `handler ${outcome.task}` : outcome.task))),
  ];
  const counted = Number(/\bchanged=(\d+)/.exec(recap ?? "")?.[1] ?? 0);
  if (names.length === 0 && counted > 0) names.push(`${counted} task(s), by Ansible's recap (their names were not recorded)`);
  return names;
}
