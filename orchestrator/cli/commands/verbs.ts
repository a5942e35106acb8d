/**
 * The dev loop on a kept VM: `apply`, `check` and `reboot` on a live run (see run/attach.ts),
 * each with the contract's exit codes: 0 it did what it should, 1 the system under test failed
 * (the apply, a check, the VM after the reboot), 4 a fault of the harness or the infrastructure.
 */
import { attachedApply, attachedCheck, attachedReboot, attachedReset } from "../../run/verbs.ts";
import { verbText, withAttachedRun, type VerbRequest } from "../../run/attach.ts";
import type { CommandContext, CommandDefinition } from "../command.ts";
import { ANSIBLE_OPTIONS, ANSIBLE_OPTIONS_HELP, ansibleArgs, expectPositionals, rebootKindsOption } from "../options.ts";

const RUN_ARGUMENT = `<run> is a run id as \`status\` lists it, its run dir name, or any unique part of it; any
live run on this host, whichever checkout made it (without <run>: the only live one).`;

function verbRequest(verb: string, context: CommandContext): VerbRequest {
  expectPositionals(verb, context.args.positionals, 0, 1, "at most one <run>");
  return {
    verb,
    reference: context.args.positionals[0],
    runner: context.runner,
    log: context.log,
    env: context.env,
    signal: context.signal,
    redactor: context.redactor,
    locations: context.locations,
    ansible: ansibleArgs(context.args.values),
    ...(typeof context.args.values.ref === "string" ? { ref: context.args.values.ref } : {}),
  };
}

export const applyCommand: CommandDefinition = {
  name: "apply",
  summary: "apply the profile's playbook again to a kept VM",
  usage: "apply [<run>] [--ref REV] [-e k=v] [--tags T] [--skip-tags T] [--diff] [-v] [--json]",
  details: `${RUN_ARGUMENT}
Applies the run's profile (as it is on disk now) with its scenario's vars, through the same
transient inventory, overlay, secrets and confinement as a run, with the infrastructure repo at
the revision the run applied (its checkout in the run dir), or as it is on disk when the run
applied the worktree. Exit 1 when the apply fails.
Options:
  --ref REV                        the infrastructure repo at this git revision instead (a branch,
                                   tag, sha), checked out read-only into the run dir
${ANSIBLE_OPTIONS_HELP}`,
  options: { ...ANSIBLE_OPTIONS, ref: { type: "string" } },
  async run(context) {
    const result = await withAttachedRun(verbRequest("apply", context), { needsProfile: true }, attachedApply);
    return { exitCode: result.exitCode, json: result, text: verbText(result) };
  },
};

export const checkCommand: CommandDefinition = {
  name: "check",
  summary: "run the profile's checks on a kept VM now",
  usage: "check [<run>] [--json]",
  details: `${RUN_ARGUMENT}
Runs the checks of the run's profile (as it is on disk now), each retried within its \`within\`.
Exit 1 when one fails.`,
  options: {},
  async run(context) {
    const result = await withAttachedRun(verbRequest("check", context), { needsProfile: true }, attachedCheck);
    return { exitCode: result.exitCode, json: result, text: verbText(result) };
  },
};

export const rebootCommand: CommandDefinition = {
  name: "reboot",
  summary: "reboot a kept VM with proof, then its checks and what the reboot changed",
  usage: "reboot [<run>] [--kind clean|power-loss|soft[,...]] [--json]",
  details: `${RUN_ARGUMENT}
The run's reboot: proven, then systemd settles, the checks run again and the state before and
after is compared (ruleset, listeners, containers, failed units). Exit 1 when a check fails after
it or the VM does not come back (its new kernel ran); exit 4 when the boot stalled before its
kernel, the domain went away from the host, or the reboot was not the kind asked for.
Options:
  --kind K[,K...]                  how (default: the profile's \`reboot\`, else clean):
                                   clean       the guest's own \`systemctl reboot\` (a new boot id)
                                   power-loss  off at once, no shutdown, then on (a new boot id;
                                               the old boot's journal must lack a clean end)
                                   soft        \`systemctl soft-reboot\`: userspace only (the same
                                               boot id, systemd's SoftRebootsCount one up)
                                   several: each from the state the VM is in now (saved once,
                                   restored before each kind after the first)`,
  options: { kind: { type: "string" } },
  async run(context) {
    const kinds = rebootKindsOption(context.args.values.kind);
    const result = await withAttachedRun(verbRequest("reboot", context), { needsProfile: true }, (run) => attachedReboot(run, kinds));
    return { exitCode: result.exitCode, json: result, text: verbText(result) };
  },
};

export const resetCommand: CommandDefinition = {
  name: "reset",
  summary: "put a kept VM back to right after its first boot and cloud-init, in seconds",
  usage: "reset [<run>] [--json]",
  details: `${RUN_ARGUMENT}
Restores the reset point \`up\` took right after cloud-init, before the apply: memory, devices and
disk as they were then (the run's own saved state and frozen overlay; the golden image is never
touched), without a boot. The boot id is that boot's, the address and the pinned host key the
same; the guest's clock is set to now. UEFI variables are not restored. \`down\` and \`reap\`
remove the reset point with the run. Exit 3 for a run without one (made by \`run\`).`,
  options: {},
  async run(context) {
    const result = await withAttachedRun(verbRequest("reset", context), { needsProfile: false }, attachedReset);
    return { exitCode: result.exitCode, json: result, text: verbText(result) };
  },
};
