/** The commands of the contract, in the order `--help` lists them. */
import type { CommandDefinition } from "../cli/command.ts";
import { pendingCommands } from "./pending.ts";
import { validateCommand } from "./validate.ts";

export const COMMANDS: readonly CommandDefinition[] = [
  ...pendingCommands.filter((command) => ["run", "up", "down", "ssh", "status", "reap"].includes(command.name)),
  validateCommand,
  ...pendingCommands.filter((command) => ["image", "doctor"].includes(command.name)),
];
