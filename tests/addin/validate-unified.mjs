// Validates a unified manifest for Microsoft 365 against the JSON schema of its
// manifestVersion, as bundled in npm @microsoft/app-manifest (nothing is fetched).
// Usage: node validate-unified.mjs manifest.json — prints {"valid": bool, "errors": [...]}.
import { readFileSync, existsSync } from "node:fs";
import { createRequire } from "node:module";
import Ajv from "ajv-draft-04";

const require = createRequire(import.meta.url);
const manifest = JSON.parse(readFileSync(process.argv[2], "utf8"));
const root = require.resolve("@microsoft/app-manifest/package.json").replace(/package\.json$/, "");
const schemaPath = `${root}build/json-schemas/teams/v${manifest.manifestVersion}/MicrosoftTeams.schema.json`;
if (!existsSync(schemaPath)) {
  console.log(JSON.stringify({ valid: false, errors: [`no bundled schema for manifestVersion ${manifest.manifestVersion}`] }));
  process.exit(1);
}
const schema = JSON.parse(readFileSync(schemaPath, "utf8"));
// The schemas name themselves by their download address; the validator never fetches it.
delete schema.$id;
delete schema.id;
const ajv = new Ajv({ allErrors: true, strict: false });
const validate = ajv.compile(schema);
const valid = validate(manifest);
console.log(JSON.stringify({ valid, schema: schemaPath.slice(root.length), errors: validate.errors ?? [] }));
process.exit(valid ? 0 : 1);
