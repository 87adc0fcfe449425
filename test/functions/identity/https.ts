/**
 * HTTPS for an OAuth-enabled Azurite: a throwaway self-signed certificate
 * for 127.0.0.1 and localhost, made with openssl in a temp dir, and trusted
 * by this process (the Azure SDK's https agent and undici both build their
 * TLS contexts from Node's default CA list when given no `ca`).
 */
import { execFile } from "node:child_process";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { getCACertificates, setDefaultCACertificates } from "node:tls";
import { promisify } from "node:util";

export interface TestCertificate {
  /** PEM file paths, for Azurite's `--cert` and `--key`. */
  cert: string;
  key: string;
  /** The certificate itself (PEM), e.g. for NODE_EXTRA_CA_CERTS of a child process. */
  pem: string;
  dispose(): Promise<void>;
}

export async function makeTestCertificate(): Promise<TestCertificate> {
  const dir = await mkdtemp(join(tmpdir(), "pagedisk-tls-"));
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  await promisify(execFile)("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-days",
    "2",
    "-subj",
    "/CN=127.0.0.1",
    "-addext",
    "subjectAltName=IP:127.0.0.1,DNS:localhost",
    "-keyout",
    key,
    "-out",
    cert,
  ]);
  return {
    cert,
    key,
    pem: await readFile(cert, "utf8"),
    dispose: () => rm(dir, { recursive: true, force: true }),
  };
}

/** Make every TLS connection of this process that brings no `ca` of its own trust `pem`. */
export function trustInThisProcess(pem: string): void {
  setDefaultCACertificates([...getCACertificates("default"), pem]);
}
