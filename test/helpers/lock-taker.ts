/**
 * A process that takes the run lock (for multi-process tests): `node lock-taker.ts <path> <hold ms>`
 * prints "held" or "refused: <message>", holds it that long, then releases and exits. On SIGINT
 * it says "interrupted" and goes on holding it (as a harness cleans up first) until its stdin
 * closes, so a test decides when the clean-up ends, however slow the machine is.
 */
import { acquireRunLock } from "../../orchestrator/host/lock.ts";

const [path, holdMs] = process.argv.slice(2);
try {
  const lock = await acquireRunLock(path!, "test");
  // The handler first: the test interrupts as soon as it reads "held".
  process.on("SIGINT", () => {
    process.stdout.write("interrupted\n");
    process.stdin.resume();
    process.stdin.once("end", () => void lock.release().then(() => process.exit(130)));
  });
  process.stdout.write("held\n");
  await new Promise((resolve) => setTimeout(resolve, Number(holdMs)));
  await lock.release();
} catch (error) {
  process.stdout.write(`refused: ${(error as Error).message.split("\n")[0]}\n`);
}
