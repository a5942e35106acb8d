/**
 * Let's Encrypt's staging roots, which no system trusts: an https check of the le-staging tier
 * with `ca: tier` trusts them. Fetched from letsencrypt.org over TLS (the system's roots vouch for
 * it) on first use and kept in the cert cache; the le tiers need the internet anyway.
 */
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";

/** Where Let's Encrypt publishes them (https://letsencrypt.org/docs/staging-environment/). */
export const STAGING_ROOT_URLS = [
  "https://letsencrypt.org/certs/staging/letsencrypt-stg-root-x1.pem",
  "https://letsencrypt.org/certs/staging/letsencrypt-stg-root-x2.pem",
] as const;

/** The staging roots as PEM text, from the cache or fetched now; throws saying what failed. */
export async function stagingRoots(cacheDir: string, fetchText: (url: string) => Promise<string> = fetchPem): Promise<string> {
  const file = join(cacheDir, "le-staging-roots.pem");
  const cached = await readFile(file, "utf8").catch(() => undefined);
  if (cached?.includes("BEGIN CERTIFICATE")) return cached;
  const pems = await Promise.all(STAGING_ROOT_URLS.map(fetchText));
  const text = pems.map((pem) => pem.trim()).join("\n") + "\n";
  await mkdir(cacheDir, { recursive: true, mode: 0o700 });
  await writeFile(`${file}.tmp`, text, { mode: 0o644 });
  await rename(`${file}.tmp`, file);
  return text;
}

async function fetchPem(url: string): Promise<string> {
  const response = await fetch(url, { signal: AbortSignal.timeout(15_000) }).catch((error: unknown) => {
    throw new Error(`ca: tier (le-staging): cannot fetch Let's Encrypt's staging root from ${url}: ${(error as Error).message}`);
  });
  const text = await response.text();
  if (!response.ok || !text.includes("BEGIN CERTIFICATE")) {
    throw new Error(`ca: tier (le-staging): ${url} answered HTTP ${response.status}, not a certificate`);
  }
  return text;
}
