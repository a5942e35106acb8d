/**
 * What every command that works on a run does around its work, in one place: `run` and `up`
 * (driver.ts) and the verbs on a kept VM (attach.ts) each record into a folder of their own
 * (run.log: every line as printed; commands.log: every external command), and on every exit path
 * end those records, scrub the folder of the run's secrets and make it private. A change to how
 * a run's folder is closed is made here.
 */
import { createWriteStream, type WriteStream } from "node:fs";
import { join } from "node:path";
import type { Runner } from "../../infra/runner.ts";
import { makePrivate, scrubDir, unscrubbed, type RunSecrets } from "../ansible/secrets.ts";
import type { HarnessError } from "../errors.ts";
import type { Log } from "../log.ts";

/** A run's folder while a command works in it: its records open, what it must do at the end. */
export class RunFolder {
  readonly dir: string;
  readonly #streams: WriteStream[];
  readonly #detach: (() => void)[];
  #closed = false;

  private constructor(dir: string, streams: WriteStream[], detach: (() => void)[]) {
    this.dir = dir;
    this.#streams = streams;
    this.#detach = detach;
  }

  /** Starts recording `log`'s lines into run.log and `runner`'s commands into commands.log of `dir` (0600, appended). */
  static open(dir: string, log: Pick<Log, "transcribe">, runner: Pick<Runner, "addRecordListener">): RunFolder {
    const transcript = createWriteStream(join(dir, "run.log"), { flags: "a", mode: 0o600 });
    const commands = createWriteStream(join(dir, "commands.log"), { flags: "a", mode: 0o600 });
    const detach = [
      log.transcribe((line) => transcript.write(`${line}\n`)),
      runner.addRecordListener((record) => commands.write(`${JSON.stringify(record)}\n`)),
    ];
    return new RunFolder(dir, [transcript, commands], detach);
  }

  /** Stops recording and waits until the records are on disk (once; later calls do nothing). */
  async endRecords(): Promise<void> {
    for (const undo of this.#detach.splice(0)) undo();
    await Promise.all(this.#streams.splice(0).map((stream) => new Promise<void>((resolve) => stream.end(resolve))));
  }

  /**
   * Closes the folder: the records ended, every file scrubbed of `secrets` (a link is never
   * followed), the folder made private. Returns the error to report when a file could not be
   * scrubbed (a secret may remain), after saying how many were redacted.
   */
  async close(secrets: Pick<RunSecrets, "redactor">, log: Pick<Log, "info" | "warn">): Promise<HarnessError | undefined> {
    await this.endRecords();
    if (this.#closed) return undefined;
    this.#closed = true;
    const scrubbed = await scrubDir(this.dir, secrets);
    if (scrubbed.changed.length > 0) log.info(`redacted secrets in ${scrubbed.changed.length} file(s) of the run dir`);
    const error = scrubbed.failed.length > 0 ? unscrubbed(scrubbed.failed) : undefined;
    if (error) log.warn(`error: ${error.message}`);
    await makePrivate(this.dir).catch(() => undefined);
    return error;
  }
}
