/**
 * Command-line options of the contract, parsed with `node:util.parseArgs` and validated at the
 * edge: every bad value names the option, what was expected and what was found (exit 2).
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { BadInputError } from "../errors.ts";
import { closest } from "../did-you-mean.ts";
import { CERT_TIERS, egressName, REBOOT_KINDS, type CertTier, type RebootKind } from "../profile/schema.ts";
import { ACCELS, ENGINES, KEEP_POLICIES, SCENARIOS, type AnsibleArgs, type RunOptions } from "../run/options.ts";

type OptionSpec = NonNullable<ParseArgsConfig["options"]>;

/** Options every command takes. */
export const COMMON_OPTIONS = {
  json: { type: "boolean", default: false },
  "runs-dir": { type: "string" },
  engine: { type: "string", default: "auto" },
  accel: { type: "string", default: "auto" },
  help: { type: "boolean", short: "h", default: false },
  quiet: { type: "boolean", short: "q", default: false },
} as const satisfies OptionSpec;

/** Options of a run without a profile (`--host`/`--group` with `--repo`). */
export const PROFILELESS_OPTIONS = {
  host: { type: "string" },
  group: { type: "string" },
  repo: { type: "string" },
  inventory: { type: "string" },
  playbook: { type: "string" },
  overrides: { type: "string" },
  image: { type: "string" },
} as const satisfies OptionSpec;

/** Help of those options. */
/** The line of `--group`, which only `run` takes. */
const GROUP_HELP_LINE = "  --group G --repo DIR             every host of inventory group G in turn (run only)\n";
/** What `--keep` means for several hosts, which only `run` runs. */
const KEEP_FOR_SEVERAL_HOSTS = "; for several hosts\n                                   never: one VM at a time, and a kept one would stop the rest";

export const PROFILELESS_HELP = `  --host H --repo DIR              no profile: host H of the repo's inventory, GREEN only, with survival
                                   checks derived from the state before the reboot
${GROUP_HELP_LINE}  --inventory FILE, --playbook FILE, --overrides FILE, --image NAME
                                   with --host/--group (defaults inventory/hosts.yml, site.yml, none,
                                   the profile default)`;

/** What reaches ansible-playbook: for `run`, `up` and `apply`. */
export const ANSIBLE_OPTIONS = {
  "extra-vars": { type: "string", short: "e", multiple: true },
  tags: { type: "string" },
  "skip-tags": { type: "string" },
  diff: { type: "boolean", default: false },
  verbose: { type: "boolean", short: "v", multiple: true },
} as const satisfies OptionSpec;

/** Options of `run` and `up`. */
export const RUN_OPTIONS = {
  ...PROFILELESS_OPTIONS,
  scenario: { type: "string" },
  certs: { type: "string" },
  // No default here: a fleet's default differs (never), so whether --keep was given matters.
  keep: { type: "string" },
  "no-egress": { type: "boolean", default: false },
  egress: { type: "string", multiple: true },
  "no-image-fetch": { type: "boolean", default: false },
  "cold-boot": { type: "boolean", default: false },
  "min-free-ram": { type: "string" },
  ref: { type: "string" },
  baseline: { type: "string" },
  ...ANSIBLE_OPTIONS,
} as const satisfies OptionSpec;

/** Options of `reap`. */
export const REAP_OPTIONS = {
  "dry-run": { type: "boolean", default: false },
  "older-than": { type: "string" },
} as const satisfies OptionSpec;

export { ACCELS, ENGINES } from "../run/options.ts";

/** The raw result of parsing: option values by name, positionals, and what came after `--`. */
export interface ParsedArgs {
  values: Record<string, string | boolean | (string | boolean)[] | undefined>;
  positionals: string[];
  /** Arguments after a literal `--` (for `ssh <run> -- cmd`). */
  rest: string[];
}

/** Parses a command's arguments strictly; unknown options are bad input. */
export function parseCommandArgs(command: string, args: readonly string[], options: OptionSpec): ParsedArgs {
  const separator = args.indexOf("--");
  const head = separator === -1 ? [...args] : args.slice(0, separator);
  const rest = separator === -1 ? [] : args.slice(separator + 1);
  try {
    const parsed = parseArgs({ args: head, options, allowPositionals: true, strict: true });
    return { values: parsed.values as ParsedArgs["values"], positionals: parsed.positionals, rest };
  } catch (error) {
    const code = (error as { code?: string }).code;
    const message = (error as Error).message;
    if (code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
      const option = /'([^']+)'/.exec(message)?.[1] ?? message;
      const hint = closest(option.replace(/^-+/, "").split("=")[0]!, Object.keys(options));
      throw new BadInputError({
        message: `unknown option ${option} for \`boma-it ${command}\`${hint ? ` (did you mean --${hint}?)` : ""}; expected one of ${Object.keys(options)
          .map((name) => `--${name}`)
          .join(", ")} (see \`boma-it ${command} --help\`)`,
      });
    }
    if (code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") {
      throw new BadInputError({ message: `${message.split("\n")[0]} (see \`boma-it ${command} --help\`)` });
    }
    throw new BadInputError({ message: `${message} (see \`boma-it ${command} --help\`)` });
  }
}

/** Checks that an option's (or a word's: `what` without dashes) value is one of the allowed words. */
export function oneOf<const T extends readonly string[]>(option: string, value: unknown, allowed: T, what = `--${option}`): T[number] {
  if (typeof value === "string" && (allowed as readonly string[]).includes(value)) return value;
  const hint = typeof value === "string" ? closest(value, allowed) : undefined;
  throw new BadInputError({
    message: `${what}: expected one of ${allowed.join(", ")}, found ${JSON.stringify(value ?? "nothing")}${hint ? ` (did you mean ${hint}?)` : ""}`,
  });
}

/** The cert tier from the command line, if given. */
export function certTier(value: unknown): CertTier | undefined {
  return value === undefined ? undefined : oneOf("certs", value, CERT_TIERS);
}

/** `--kind clean,power-loss,soft`: reboot kinds in order, each at most once (undefined when not given). */
export function rebootKindsOption(value: unknown): RebootKind[] | undefined {
  if (value === undefined) return undefined;
  const kinds = String(value)
    .split(",")
    .map((kind) => oneOf("kind", kind.trim(), REBOOT_KINDS));
  const twice = kinds.find((kind, index) => kinds.indexOf(kind) !== index);
  if (twice) throw new BadInputError({ message: `--kind: expected each kind at most once, found ${twice} twice` });
  return kinds;
}

/** A positive whole number option such as `--min-free-ram 4096`. */
export function positiveInteger(option: string, value: unknown): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value === "string" && /^\d+$/.test(value) && Number(value) > 0) return Number(value);
  throw new BadInputError({ message: `--${option}: expected a positive whole number, found ${JSON.stringify(value)}` });
}

/** A duration such as `90s`, `30m`, `2h` or `1d`, in seconds. */
export function duration(option: string, value: unknown): number | undefined {
  if (value === undefined) return undefined;
  const match = typeof value === "string" ? /^(\d+)([smhd])$/.exec(value) : null;
  if (!match) {
    throw new BadInputError({
      message: `--${option}: expected a duration like 90s, 30m, 2h or 1d, found ${JSON.stringify(value)}`,
    });
  }
  const unit = { s: 1, m: 60, h: 3600, d: 86400 }[match[2] as "s" | "m" | "h" | "d"];
  return Number(match[1]) * unit;
}

/** Checks the number of positionals a command got. */
export function expectPositionals(command: string, positionals: readonly string[], min: number, max: number, what: string): void {
  if (positionals.length < min) {
    throw new BadInputError({ message: `\`boma-it ${command}\` needs ${what}; found nothing (see \`boma-it ${command} --help\`)` });
  }
  if (positionals.length > max) {
    throw new BadInputError({
      message: `\`boma-it ${command}\` takes ${what}; found extra argument${positionals.length - max > 1 ? "s" : ""} ${positionals
        .slice(max)
        .map((arg) => JSON.stringify(arg))
        .join(", ")}`,
    });
  }
}

/** What Ansible takes as a variable name. */
const ANSIBLE_VAR_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Help text of what reaches ansible-playbook. */
export const ANSIBLE_OPTIONS_HELP = `  -e, --extra-vars KEY=VALUE|JSON  an extra var for the playbook, or a JSON object of them (repeatable;
                                   the VM stays its only target)
  --tags T, --skip-tags T          passed to ansible-playbook as they are
  --diff                           ansible-playbook --diff
  -v, --verbose                    Ansible's verbosity (repeatable: -vvv)`;

/** Help text of the options of `run` and `up` (their --scenario differs). */
export function runOptionsHelp(command: "run" | "up"): string {
  const scenario =
    command === "run"
      ? "  --scenario red-green|green|red   which scenarios (default: red-green when the profile has scenarios.red)"
      : "  --scenario green|red             which scenario's vars are applied (default green)";
  // `up` brings up one host: what only a group of hosts means is not its to show.
  const shared =
    command === "run"
      ? RUN_OPTIONS_HELP
      : RUN_OPTIONS_HELP.replace(GROUP_HELP_LINE, "").replace(KEEP_FOR_SEVERAL_HOSTS, "").replace("with --host/--group", "with --host");
  return `Options:\n${scenario}\n${shared}`;
}

/** Help text of the options `run` and `up` share. */
const RUN_OPTIONS_HELP = `  --certs internal|le-staging|le-prod-wildcard   cert tier (le-prod-wildcard only here, never in a profile)
  --keep on-failure|always|never   keep the VM after the run (default on-failure; for several hosts
                                   never: one VM at a time, and a kept one would stop the rest)
  --egress NAME                    a name the VM may reach (and its subdomains), besides the cert
                                   tier's, the Debian mirrors and the profile's egress: (repeatable);
                                   every other name and address is refused and reported
  --egress open                    no allowlist for this run: the VM reaches everything public
  --no-egress                      a network with no forwarding at all (forces --certs internal)
  --min-free-ram MiB               refuse to start below this much free RAM
  --no-image-fetch                 refuse when the profile's golden image is missing, instead of
                                   building or pulling it first (a few minutes, once)
  --cold-boot                      boot each VM from power-on, even when a saved first boot of the
                                   same VM could start it in seconds (and save none)
  --ref REV                        the infrastructure repo at this git revision (a branch, tag, sha) for
                                   the scenario that is run (GREEN, or --scenario's), checked out
                                   read-only into the run dir; without it, the repo as it is on disk
  --baseline REV                   the upgrade path: REV is applied first (what the live host runs),
                                   then the change, then the checks, the reboot and the checks again
                                   (the profile is always read from disk; only the repo is taken at a revision)
${PROFILELESS_HELP}
${ANSIBLE_OPTIONS_HELP}`;

/** Checks the options of `run` and `up`. */
export function runCommandOptions(values: ParsedArgs["values"]): RunOptions {
  return {
    scenario: values.scenario === undefined ? undefined : oneOf("scenario", values.scenario, SCENARIOS),
    certs: certTier(values.certs),
    keep: values.keep === undefined ? "on-failure" : oneOf("keep", values.keep, KEEP_POLICIES),
    noEgress: values["no-egress"] === true,
    ...egressOptions(values),
    minFreeRamMiB: positiveInteger("min-free-ram", values["min-free-ram"]),
    engine: oneOf("engine", values.engine, ENGINES),
    accel: oneOf("accel", values.accel, ACCELS),
    ansible: ansibleArgs(values),
    imageFetch: values["no-image-fetch"] !== true,
    ...(values["cold-boot"] === true ? { coldBoot: true } : {}),
    ...(typeof values.ref === "string" ? { ref: values.ref } : {}),
    ...(typeof values.baseline === "string" ? { baseline: values.baseline } : {}),
    ...(values.serial === true ? { serial: true } : {}),
  };
}

/** `--egress NAME...` or `--egress open`, checked: names as a profile's `egress:`, `open` alone, neither with --no-egress. */
export function egressOptions(values: ParsedArgs["values"]): Pick<RunOptions, "egress" | "egressOpen"> {
  const given = (Array.isArray(values.egress) ? values.egress : []).filter((value): value is string => typeof value === "string");
  if (given.length === 0) return { egress: [], egressOpen: false };
  if (values["no-egress"] === true)
    throw new BadInputError({ message: `--egress and --no-egress: expected one of them, found both (--egress ${given.join(" --egress ")})` });
  if (given.includes("open")) {
    if (given.length > 1)
      throw new BadInputError({
        message: `--egress open lifts the allowlist: expected it alone, found it with ${given.filter((name) => name !== "open").join(", ")}`,
      });
    return { egress: [], egressOpen: true };
  }
  for (const name of given) {
    const checked = egressName.safeParse(name);
    if (!checked.success)
      throw new BadInputError({ message: `--egress: ${checked.error.issues[0]?.message ?? "expected a DNS name"}, found ${JSON.stringify(name)}` });
  }
  return { egress: [...new Set(given.map((name) => name.toLowerCase()))], egressOpen: false };
}

/**
 * Checks what goes to ansible-playbook: `-e key=value` (a key Ansible takes) or `-e '{"key": ...}'`
 * (a JSON object, for lists and numbers, as Ansible takes it), `--tags`, `--skip-tags`, `--diff`, `-v`.
 */
export function ansibleArgs(values: ParsedArgs["values"]): AnsibleArgs {
  const extraVars: string[] = [];
  const list = (name: string): (string | boolean)[] => {
    const value = values[name];
    return Array.isArray(value) ? value : value === undefined || value === false ? [] : [value];
  };
  for (const pair of list("extra-vars")) {
    if (typeof pair === "string" && pair.trimStart().startsWith("{")) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(pair);
      } catch (error) {
        throw new BadInputError({ message: `-e: expected key=value or a JSON object, found ${JSON.stringify(pair)} (${(error as Error).message})` });
      }
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
        throw new BadInputError({ message: `-e: expected a JSON object, found ${JSON.stringify(pair)}` });
      for (const key of Object.keys(parsed)) {
        if (!ANSIBLE_VAR_NAME.test(key))
          throw new BadInputError({ message: `-e: ${JSON.stringify(key)} is not an Ansible variable name (in ${JSON.stringify(pair)})` });
      }
      // Passed on as written (Ansible reads the numbers, not a re-serialised copy of them), less
      // leading blanks: Ansible takes text as JSON only when it starts with the brace.
      extraVars.push(pair.trim());
      continue;
    }
    const match = typeof pair === "string" ? /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/s.exec(pair) : null;
    if (!match)
      throw new BadInputError({ message: `-e: expected key=value with an Ansible variable name as key, or a JSON object, found ${JSON.stringify(pair)}` });
    extraVars.push(JSON.stringify({ [match[1]!]: match[2]! }));
  }
  const text = (name: string) => (typeof values[name] === "string" ? (values[name] as string) : undefined);
  return { extraVars, tags: text("tags"), skipTags: text("skip-tags"), diff: values.diff === true, verbosity: list("verbose").length };
}
