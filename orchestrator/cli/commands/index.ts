/** The commands of the contract, in the order `--help` lists them. */
import type { CommandDefinition } from "../command.ts";
import { consoleCommand } from "./console.ts";
import { doctorCommand } from "./doctor.ts";
import { downCommand } from "./down.ts";
import { imageCommand } from "./image.ts";
import { reapCommand } from "./reap.ts";
import { runCommand } from "./run.ts";
import { reportCommand, runsCommand } from "./runs.ts";
import { sshCommand } from "./ssh.ts";
import { statusCommand } from "./status.ts";
import { upCommand } from "./up.ts";
import { validateCommand } from "./validate.ts";
import { applyCommand, checkCommand, rebootCommand, resetCommand } from "./verbs.ts";

export const COMMANDS: readonly CommandDefinition[] = [
  runCommand,
  upCommand,
  applyCommand,
  checkCommand,
  rebootCommand,
  resetCommand,
  consoleCommand,
  downCommand,
  sshCommand,
  statusCommand,
  runsCommand,
  reportCommand,
  reapCommand,
  validateCommand,
  imageCommand,
  doctorCommand,
];
