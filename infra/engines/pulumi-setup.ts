/**
 * What the pulumi engine needs that does not load Pulumi: where its state lives, the versions it
 * requires, how to install them offline, and its "cannot run here" error. Commands import this;
 * the Automation API module (./pulumi.ts, ~130 MiB and ~0.3 s to load) only when it is used.
 */
import { join, resolve } from "node:path";

/** The project name of every boma-it stack (also the root Pulumi.yaml's). */
export const PULUMI_PROJECT = "boma-it";
/** Oldest CLI we accept: stack tags on file backends arrived in 3.211. */
export const PULUMI_MIN_VERSION = "3.211.0";
/** The resource plugin the inline program needs: the version of the pinned `@pulumi/command`. */
export const COMMAND_PLUGIN = { kind: "resource", name: "command", version: "4.5.0" } as const;
/** Stack tags (file backends keep them next to the checkpoint). */
export const TAGS = { created: "boma-it:created", pid: "boma-it:pid", host: "boma-it:host", state: "boma-it:state" } as const;

/** Where the pulumi engine keeps its state, for a stacks dir. */
export function pulumiPaths(stacksDir: string) {
  const dir = resolve(stacksDir, "pulumi");
  return {
    dir,
    home: join(dir, "home"),
    passphraseFile: join(dir, "passphrase"),
    backendUrl: `file://${dir}`,
    locksDir: join(dir, ".pulumi", "locks", "organization", PULUMI_PROJECT),
  };
}

/** How to install the CLI and the command plugin on a host without internet (for error messages). */
export function pulumiInstallHint(stacksDir: string): string {
  const { home } = pulumiPaths(stacksDir);
  return [
    `install the Pulumi CLI (${PULUMI_MIN_VERSION} or newer) and its command plugin ${COMMAND_PLUGIN.version}; on a host without internet, carry two archives over:`,
    "  fetched elsewhere: https://get.pulumi.com/releases/sdk/pulumi-v3.270.0-linux-x64.tar.gz",
    `                    https://github.com/pulumi/pulumi-command/releases/download/v${COMMAND_PLUGIN.version}/pulumi-resource-command-v${COMMAND_PLUGIN.version}-linux-amd64.tar.gz`,
    "  then here:        tar -xzf pulumi-v3.270.0-linux-x64.tar.gz -C /opt && export PATH=/opt/pulumi:$PATH",
    `                    PULUMI_HOME=${home} pulumi plugin install resource command ${COMMAND_PLUGIN.version} --file pulumi-resource-command-v${COMMAND_PLUGIN.version}-linux-amd64.tar.gz`,
    "or run with --engine direct (the same plan, carried out without Pulumi)",
  ].join("\n");
}

/** No usable CLI (missing, too old, plugin missing): the orchestrator refuses the run (exit 3). */
export class PulumiUnavailableError extends Error {
  /** How to get a usable CLI and plugin. */
  readonly remedy: string;
  constructor(message: string, remedy: string) {
    super(message);
    this.name = "PulumiUnavailableError";
    this.remedy = remedy;
  }
}
