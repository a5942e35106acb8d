/**
 * What a run is asked to do, as the domain knows it (the CLI parses into these; nothing here
 * knows of argv): which engine and accel, which scenarios, the cert tier, when to keep the VM,
 * and what Ansible gets on top of the harness's own arguments.
 */
import type { EngineChoice } from "../host/engine-choice.ts";
import type { CertTier } from "../profile/schema.ts";

export { ENGINES, type EngineChoice } from "../host/engine-choice.ts";
export const ACCELS = ["auto", "kvm", "tcg"] as const;
/** Hardware virtualisation, software emulation, or whichever works here (auto). */
export type AccelChoice = (typeof ACCELS)[number];
export const SCENARIOS = ["red-green", "green", "red"] as const;
/** Which scenarios a run runs. */
export type ScenarioChoice = (typeof SCENARIOS)[number];
export const KEEP_POLICIES = ["on-failure", "always", "never"] as const;
/** When a scenario's VM outlives it: when the system under test failed (default), always, never. */
export type KeepPolicy = (typeof KEEP_POLICIES)[number];

/** What Ansible gets on top of the harness's own arguments (the confinement's extra vars still come last). */
export interface AnsibleArgs {
  /** Each `-e` as a JSON object text (`key=value` made into one), in order: a later one wins. */
  extraVars: string[];
  tags: string | undefined;
  skipTags: string | undefined;
  diff: boolean;
  /** 0 for none, n for `-v` repeated n times. */
  verbosity: number;
}

/** The checked options of `run` and `up`. */
export interface RunOptions {
  scenario: ScenarioChoice | undefined;
  certs: CertTier | undefined;
  keep: KeepPolicy;
  noEgress: boolean;
  /** `--egress NAME`: names the VM may reach for this run, besides the profile's. */
  egress: string[];
  /** `--egress open`: no allowlist for this run (NAT to everything public), said in the log. */
  egressOpen: boolean;
  minFreeRamMiB: number | undefined;
  engine: EngineChoice;
  accel: AccelChoice;
  ansible: AnsibleArgs;
  /** Make the profile's golden image when it is missing (false: `--no-image-fetch`, refuse instead). */
  imageFetch: boolean;
  /** A git revision of the infrastructure repo for the scenario that is run (GREEN, or the one `--scenario` names). */
  ref?: string;
  /** The upgrade path: this revision first, then the scenario's. */
  baseline?: string;
  /**
   * `--cold-boot`: every VM boots from power-on and no first boot is saved; without it a VM starts
   * from a saved first boot of the same VM where one is free (host/warm-states.ts).
   */
  coldBoot?: boolean;
  /** `--serial`: scenarios one at a time; without it RED and GREEN run side by side where the machine holds both VMs (see preflight.ts). */
  serial?: boolean;
}

/** No Ansible arguments beyond the harness's. */
export const NO_ANSIBLE_ARGS: AnsibleArgs = { extraVars: [], tags: undefined, skipTags: undefined, diff: false, verbosity: 0 };

/** ansible-playbook arguments for `args` (before the harness's last word). */
export function ansiblePlaybookArgs(args: AnsibleArgs): string[] {
  return [
    ...args.extraVars.flatMap((vars) => ["-e", vars]),
    ...(args.tags ? ["--tags", args.tags] : []),
    ...(args.skipTags ? ["--skip-tags", args.skipTags] : []),
    ...(args.diff ? ["--diff"] : []),
    ...(args.verbosity > 0 ? [`-${"v".repeat(Math.min(args.verbosity, 6))}`] : []),
  ];
}
