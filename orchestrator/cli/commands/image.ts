/** `boma-it image pull|build|ls`: golden images (download + verify, offline build, list). */
import { IMAGE_NAMES, imageInfo, listImages, type ImageName } from "../../../infra/image/images.ts";
import { closest } from "../../did-you-mean.ts";
import type { CommandDefinition } from "../command.ts";
import { expectPositionals, oneOf } from "../options.ts";
import { BadInputError, ExitCode } from "../../errors.ts";
import { imageAction, remakeImage, staleRecipe } from "../../host/golden.ts";
import { libvirtFor } from "../../host/libvirt.ts";
import { imageDir, runLockPath } from "../../host/paths.ts";
import { underRunLock } from "../../host/lock.ts";
import { listWarmStates, pruneAllWarmStates, warmStateCacheOf } from "../../host/warm-states.ts";

export const imageCommand: CommandDefinition = {
  name: "image",
  summary: "golden images: pull (download + verify), build (offline), ls; saved first boots: ls, prune",
  usage: "image ls | image pull [debian-13-genericcloud] | image build [debian-13-local] [--force] | image prune [--json]",
  details: `ls     the cache ($BOMA_IT_IMAGE_DIR, default /var/cache/boma-it/images) and what is in it;
       --json has a built image's manifest: its recipe and every package with its version; then
       your saved first boots ($BOMA_IT_STATE_CACHE, default ~/.cache/boma-it/states): the VM
       states later VMs of the same shape start from (see the runbook's "warm starts"); the
       newest eight are kept within $BOMA_IT_STATE_CACHE_MAX_GIB (default 8), oldest out first
prune  remove your saved first boots (under the run lock: never one a run is using); the next
       VM of each shape boots and saves anew
pull   download Debian's genericcloud image ($BOMA_IT_DEBIAN_CLOUD_URL) and check it against
       SHA512SUMS; a mismatch is refused (exit 3) and the file is not kept
build  make debian-13-local offline from Debian packages (mmdebstrap from $BOMA_IT_DEBIAN_MIRROR,
       default http://deb.debian.org/debian; needs root; a few minutes)
An image that exists is kept unless --force. Golden files are read-only; runs use overlays.`,
  options: { force: { type: "boolean", default: false } },
  async run({ args, log, runner, env, signal }) {
    expectPositionals("image", args.positionals, 1, 2, "ls, pull or build, and at most one image name");
    const action = oneOf("image", args.positionals[0], ["ls", "pull", "build", "prune"] as const, "`boma-it image <action>`");
    const dir = imageDir(env);
    const cache = warmStateCacheOf(env);
    const statesDir = cache.dir;
    if (action === "prune") {
      expectPositionals("image prune", args.positionals, 1, 1, "no image name");
      const removed = await underRunLock(runLockPath(env), "image prune", undefined, () => pruneAllWarmStates(statesDir));
      return {
        exitCode: ExitCode.pass,
        json: { statesDir, removed },
        text: removed.length === 0 ? `no saved first boots in ${statesDir}` : `removed ${removed.length} saved first boot(s) from ${statesDir}`,
      };
    }
    if (action === "ls") {
      const images = await listImages(dir);
      const states = await listWarmStates(statesDir);
      const text = [
        `golden images in ${dir}:`,
        ...images.map((image) =>
          image.present
            ? `  ${image.name.padEnd(24)} ${Math.round((image.sizeBytes ?? 0) / 1024 / 1024)} MiB  ${image.createdAt}  ${image.source ?? ""}${image.manifest ? `  ${Object.keys(image.manifest.packages).length} packages, recipe ${image.manifest.recipe} (--json lists them)` : ""}`
            : `  ${image.name.padEnd(24)} (missing: image ${imageAction(image.name)}, or made on first use by a run)`,
        ),
        `saved first boots in ${statesDir} (the newest ${cache.kept} within ${(cache.maxBytes / 2 ** 30).toFixed(1)} GiB are kept):`,
        ...(states.length === 0
          ? ["  none (the next VM of a shape saves one)"]
          : states.map((state) =>
              state.meta
                ? `  ${state.key.padEnd(24)} ${Math.round(state.sizeBytes / 1024 / 1024)} MiB  saved ${state.meta.savedAt} by ${state.meta.fromRun}`
                : `  ${state.key.padEnd(24)} (not whole: \`image prune\` removes it)`,
            )),
      ].join("\n");
      return {
        exitCode: ExitCode.pass,
        json: { images, states: { dir: statesDir, kept: cache.kept, maxBytes: cache.maxBytes, saved: states } },
        text,
      };
    }
    const expected = action === "pull" ? "debian-13-genericcloud" : "debian-13-local";
    const asked = args.positionals[1] ?? expected;
    // An image the other action makes (or a typo of one) is said so, not only refused.
    const meant = IMAGE_NAMES.includes(asked as ImageName) ? asked : closest(asked, IMAGE_NAMES);
    if (meant && meant !== expected) {
      throw new BadInputError({
        message: `\`boma-it image ${action}\`: ${meant} is made by \`boma-it image ${imageAction(meant)}\`, not ${action === "pull" ? "pulled" : "built"}${meant === asked ? "" : ` (found ${JSON.stringify(asked)}: did you mean ${meant}?)`}`,
      });
    }
    const name = oneOf(`image ${action}`, asked, [expected] as const, `\`boma-it image ${action} <image>\``);
    const existing = await imageInfo(dir, name);
    // A built image from an older recipe is made again; one placed by hand (no sidecar) is kept.
    const stale = action === "build" ? await staleRecipe(existing) : undefined;
    if (existing.present && !args.values.force && !stale) {
      return { exitCode: ExitCode.pass, json: existing, text: `${name} is already in ${dir} (use --force to make it again)` };
    }
    const info = await remakeImage(dir, name, existing.present, {
      runner,
      log,
      env,
      signal,
      libvirt: libvirtFor(runner, env),
      ...(stale ? { why: stale } : {}),
    });
    return { exitCode: ExitCode.pass, json: info, text: `${name}: ${info.path} (${Math.round((info.sizeBytes ?? 0) / 1024 / 1024)} MiB)` };
  },
};
