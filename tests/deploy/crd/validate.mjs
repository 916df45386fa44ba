// Validate custom resources against the schemas generated from their CRDs.
//   node validate.mjs NODE_MODULES_DIR < objects.json   ->   one JSON result per object
// Every object must be of a kind listed here: an unknown kind is a failure, never a skip.
import { pathToFileURL } from "node:url";
import { readFileSync } from "node:fs";
import { join } from "node:path";

const MODELS = {
  "keda.sh/v1alpha1/ScaledObject": "@kubernetes-models/keda/keda.sh/v1alpha1/ScaledObject.js",
  "keda.sh/v1alpha1/TriggerAuthentication":
    "@kubernetes-models/keda/keda.sh/v1alpha1/TriggerAuthentication.js",
  "monitoring.coreos.com/v1/ServiceMonitor":
    "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor.js",
  "monitoring.coreos.com/v1/PrometheusRule":
    "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/PrometheusRule.js",
};

const modules = process.argv[2];
const objects = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const object of objects) {
  const kind = `${object.apiVersion}/${object.kind}`;
  const result = { kind, name: object.metadata?.name ?? "", ok: false, error: "" };
  const path = MODELS[kind];
  if (!path) {
    result.error = `no schema for ${kind}`;
  } else {
    const module = await import(pathToFileURL(join(modules, path)).href);
    const Model = module[object.kind];
    try {
      new Model(object).validate();
      result.ok = true;
    } catch (error) {
      result.error = String(error.message ?? error);
    }
  }
  results.push(result);
}
process.stdout.write(JSON.stringify(results));
