/**
 * Commands of the contract whose machinery arrives with a later issue. Each parses and checks
 * its arguments like the real one will, then says plainly what is not built yet (exit 4).
 */
import type { CommandDefinition } from "../cli/command.ts";
import { certTier, duration, expectPositionals, KEEP_POLICIES, oneOf, positiveInteger, REAP_OPTIONS, RUN_OPTIONS, SCENARIOS } from "../cli/options.ts";
import { NotBuiltError } from "../errors.ts";

const RUN_DETAILS = `Options:
  --scenario red-green|green|red   which scenarios (default: red-green when the profile has scenarios.red)
  --certs internal|le-staging|le-prod-wildcard   cert tier (le-prod-wildcard only here, never in a profile)
  --keep on-failure|always|never   keep the VM after the run (default on-failure)
  --no-egress                      a network with no forwarding at all (forces --certs internal)
  --min-free-ram MiB               refuse to start below this much free RAM`;

function checkRunOptions(values: Record<string, unknown>): void {
  if (values.scenario !== undefined) oneOf("scenario", values.scenario, SCENARIOS);
  certTier(values.certs);
  oneOf("keep", values.keep, KEEP_POLICIES);
  positiveInteger("min-free-ram", values["min-free-ram"]);
}

export const pendingCommands: readonly CommandDefinition[] = [
  {
    name: "run",
    summary: "the whole sequence: provision, apply, check, reboot, check; RED→GREEN",
    usage: "run <profile> [--scenario S] [--certs T] [--keep K] [--no-egress] [--min-free-ram MiB] [--json]",
    details: RUN_DETAILS,
    options: RUN_OPTIONS,
    async run({ args }) {
      expectPositionals("run", args.positionals, 1, 1, "one <profile>");
      checkRunOptions(args.values);
      throw new NotBuiltError("`run` (apply → reboot → assert, RED→GREEN)", "issue 4");
    },
  },
  {
    name: "up",
    summary: "provision, boot and apply; keep the VM and print how to reach it",
    usage: "up <profile> [--certs T] [--no-egress] [--min-free-ram MiB] [--json]",
    details: RUN_DETAILS,
    options: RUN_OPTIONS,
    async run({ args }) {
      expectPositionals("up", args.positionals, 1, 1, "one <profile>");
      checkRunOptions(args.values);
      throw new NotBuiltError("`up` (boot a throwaway VM)", "issue 3");
    },
  },
  {
    name: "down",
    summary: "destroy one kept run (the only live one when omitted)",
    usage: "down [<run>] [--json]",
    details: "<run> is a run id as `status` lists it.",
    options: {},
    async run({ args }) {
      expectPositionals("down", args.positionals, 0, 1, "at most one <run>");
      throw new NotBuiltError("`down`", "issue 3");
    },
  },
  {
    name: "ssh",
    summary: "a shell or a command in a live VM, with its pinned host key",
    usage: "ssh <run> [-- command ...]",
    details: "<run> is a run id as `status` lists it. Without a command, an interactive shell.",
    options: {},
    async run({ args }) {
      expectPositionals("ssh", args.positionals, 1, 1, "one <run>");
      throw new NotBuiltError("`ssh`", "issue 3");
    },
  },
  {
    name: "status",
    summary: "live runs: id, engine, host, age, IP, ssh command",
    usage: "status [--json]",
    details: "Lists the runs whose stacks exist.",
    options: {},
    async run({ args }) {
      expectPositionals("status", args.positionals, 0, 0, "no arguments");
      throw new NotBuiltError("`status`", "issue 3");
    },
  },
  {
    name: "reap",
    summary: "destroy stale stacks and sweep every boma-it- libvirt object and file",
    usage: "reap [--dry-run] [--older-than 2h] [--json]",
    details: `Options:
  --dry-run          list what would be destroyed, touch nothing
  --older-than AGE   spare runs younger than AGE (90s, 30m, 2h, 1d)`,
    options: REAP_OPTIONS,
    async run({ args }) {
      expectPositionals("reap", args.positionals, 0, 0, "no arguments");
      duration("older-than", args.values["older-than"]);
      throw new NotBuiltError("`reap`", "issue 5");
    },
  },
  {
    name: "image",
    summary: "golden images: pull (download + verify), build (offline), ls",
    usage: "image pull|build|ls [name] [--json]",
    details: "Names: debian-13-genericcloud (pull), debian-13-local (build).",
    options: { force: { type: "boolean", default: false } },
    async run({ args }) {
      expectPositionals("image", args.positionals, 1, 2, "pull, build or ls");
      oneOf("image subcommand", args.positionals[0], ["pull", "build", "ls"] as const);
      throw new NotBuiltError("`image`", "issue 3");
    },
  },
  {
    name: "doctor",
    summary: "check prerequisites, each with the fix",
    usage: "doctor [--json]",
    details: "Checks virsh, qemu-img, OVMF, libvirtd, ISO tool, ansible-playbook, disk space.",
    options: {},
    async run({ args }) {
      expectPositionals("doctor", args.positionals, 0, 0, "no arguments");
      throw new NotBuiltError("`doctor`", "issue 3");
    },
  },
];
