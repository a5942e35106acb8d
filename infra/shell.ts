/**
 * A plan resource's commands as one POSIX shell script, for engines that take a command line
 * (the pulumi engine's `local.Command`). Same semantics as the direct engine: creates stop at the
 * first failure; deletes tolerate `mayFail`, and "not found" where `ignoreAbsent`. Stdin travels
 * in environment variables (`BOMA_CREATE_STDIN_<n>`), so secrets can be marked secret where they are
 * stored, and never appear in the script text.
 */
import type { PlanCommand } from "./plan.ts";
import { quoteArg } from "./runner.ts";

/** Output that means the object to delete is already gone (shared with the direct engine). */
export const ABSENT_PATTERN = "not found|no (domain|network|storage pool|storage vol|nwfilter) with matching|failed to get|does not exist|No such file";

/** A script and the environment it needs. */
export interface ShellScript {
  script: string;
  /** Variables holding stdin contents, by name; `secret` tells which hold secrets. */
  environment: Record<string, { value: string; secret: boolean }>;
}

/** Renders the create commands of a resource. */
export function createScript(commands: readonly PlanCommand[]): ShellScript {
  return render(commands, "BOMA_CREATE_STDIN", (line) => line);
}

/** Renders the delete commands of a resource. */
export function deleteScript(commands: readonly PlanCommand[]): ShellScript {
  return render(commands, "BOMA_DELETE_STDIN", (line, command) => {
    if (command.mayFail) return `${line} || true`;
    if (command.ignoreAbsent) {
      return `out=$(${line} 2>&1) || { printf '%s\\n' "$out" | grep -qiE ${quoteArg(ABSENT_PATTERN)} || { printf '%s\\n' "$out" >&2; exit 1; }; }`;
    }
    return line;
  });
}

function render(commands: readonly PlanCommand[], prefix: string, decorate: (line: string, command: PlanCommand) => string): ShellScript {
  const environment: ShellScript["environment"] = {};
  const lines = ["set -e"];
  commands.forEach((command, index) => {
    let line = command.argv.map(quoteArg).join(" ");
    if (command.stdin !== undefined) {
      const name = `${prefix}_${index}`;
      environment[name] = { value: command.stdin, secret: command.secretStdin === true };
      line = `printf '%s' "$${name}" | ${line}`;
    }
    lines.push(decorate(line, command));
  });
  return { script: `${lines.join("\n")}\n`, environment };
}
