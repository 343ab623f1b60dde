/** A throwaway CA and server certificates (openssl CLI), for LDAPS/StartTLS tests. */
import { join } from "node:path";
import { execa } from "execa";

export interface TestPki {
  readonly caFile: string;
  readonly certFile: string;
  readonly keyFile: string;
  /** A second, unrelated CA (to prove an untrusted certificate is refused). */
  readonly otherCaFile: string;
}

async function ca(dir: string, name: string): Promise<{ cert: string; key: string }> {
  const key = join(dir, `${name}.key`);
  const cert = join(dir, `${name}.pem`);
  await execa("openssl", [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    key,
    "-out",
    cert,
    "-days",
    "2",
    "-subj",
    `/CN=${name}`,
  ]);
  return { cert, key };
}

/** A CA, and a server certificate it signed for `names` (DNS or IP subjectAltNames). */
export async function makePki(dir: string, names: { dns?: string[]; ip?: string[] }): Promise<TestPki> {
  const root = await ca(dir, "varco-test-ca");
  const other = await ca(dir, "other-ca");
  const keyFile = join(dir, "server.key");
  const csr = join(dir, "server.csr");
  const certFile = join(dir, "server.pem");
  const ext = join(dir, "server.ext");
  const san = [...(names.dns ?? []).map((d) => `DNS:${d}`), ...(names.ip ?? []).map((i) => `IP:${i}`)].join(",");
  await execa("openssl", [
    "req",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    keyFile,
    "-out",
    csr,
    "-subj",
    "/CN=ldap",
  ]);
  await execa("bash", ["-c", 'printf "subjectAltName=%s\\n" "$1" > "$2"', "_", san, ext]);
  await execa("openssl", [
    "x509",
    "-req",
    "-in",
    csr,
    "-CA",
    root.cert,
    "-CAkey",
    root.key,
    "-CAcreateserial",
    "-out",
    certFile,
    "-days",
    "2",
    "-extfile",
    ext,
  ]);
  await execa("chmod", ["644", keyFile]);
  return { caFile: root.cert, certFile, keyFile, otherCaFile: other.cert };
}
