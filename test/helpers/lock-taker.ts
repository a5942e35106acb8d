/**
 * A process that takes the run lock (for multi-process tests): `node lock-taker.ts <path> <hold ms>`
 * prints "held" or "refused: <message>", holds it that long, then releases and exits. On SIGINT
 * it says "interrupted" and releases only after a second (as a harness cleans up first).
 */
import { acquireRunLock } from "../../orchestrator/host/lock.ts";

const [path, holdMs] = process.argv.slice(2);
try {
  const lock = await acquireRunLock(path!, "test");
  process.stdout.write("held\n");
  process.on("SIGINT", () => {
    process.stdout.write("interrupted\n");
    setTimeout(() => void lock.release().then(() => process.exit(130)), 1000);
  });
  await new Promise((resolve) => setTimeout(resolve, Number(holdMs)));
  await lock.release();
} catch (error) {
  process.stdout.write(`refused: ${(error as Error).message.split("\n")[0]}\n`);
}
