// Validates Istio objects (WasmPlugin, AuthorizationPolicy) with @kubernetes-models/istio (schemas
// generated from Istio's CRDs).
// Input on stdin: a JSON array of objects. Output: a JSON array with one entry per object,
// {"kind", "name", "error"} where error is null when the object is valid.
// Usage: BOIFI_NODE_MODULES=<node_modules dir> node validate-istio.mjs < objects.json
import { readFileSync } from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

// The models live in a tool directory outside this repo's tree; resolve them from there.
const modulesDir = process.env.BOIFI_NODE_MODULES;
if (!modulesDir) {
  console.error("BOIFI_NODE_MODULES must point at the node_modules holding @kubernetes-models/istio");
  process.exit(2);
}
// Imported by file path: the package's "exports" map has no entry for require-style resolution.
const load = async (file) =>
  import(pathToFileURL(path.join(modulesDir, "@kubernetes-models/istio", file)).href);

const { WasmPlugin } = await load("extensions.istio.io/v1alpha1/WasmPlugin.js");
const { AuthorizationPolicy } = await load("security.istio.io/v1beta1/AuthorizationPolicy.js");
const models = {
  "extensions.istio.io/v1alpha1/WasmPlugin": WasmPlugin,
  "security.istio.io/v1beta1/AuthorizationPolicy": AuthorizationPolicy,
};

const objects = JSON.parse(readFileSync(0, "utf8"));
const results = objects.map((obj) => {
  const name = obj?.metadata?.name ?? "";
  const Model = models[`${obj.apiVersion}/${obj.kind}`];
  if (!Model) {
    return { kind: obj.kind, name, error: `no model for ${obj.apiVersion}/${obj.kind}` };
  }
  try {
    new Model(obj).validate();
    return { kind: obj.kind, name, error: null };
  } catch (err) {
    return { kind: obj.kind, name, error: String(err?.message ?? err) };
  }
});
process.stdout.write(JSON.stringify(results));
