"""Validates JSON the emulator sent against Microsoft's Graph OpenAPI subset
(../shared/reference/graph/graph-v1.0-subset.openapi.json), with openapi-schema-validator —
the validator openapi-core uses — and the document's own component schemas.

Usage: python3 validate_graph.py SPEC.json SAMPLES.json
SAMPLES is a list of {"path": "/me", "method": "get", "status": "200", "body": {...}}, where
path and method name an operation of the spec and status one of its responses ("4XX" too).
Prints one line per sample; exits 1 if any does not validate.
"""
import json
import sys

from openapi_schema_validator import OAS30Validator


def response_schema(spec, path, method, status):
    responses = spec["paths"][path][method]["responses"]
    response = responses.get(status) or responses.get(status[0] + "XX")
    if "$ref" in response:
        name = response["$ref"].rsplit("/", 1)[-1]
        response = spec["components"]["responses"][name]
    return response["content"]["application/json"]["schema"]


def main(spec_path, samples_path):
    spec = json.load(open(spec_path))
    failures = 0
    for sample in json.load(open(samples_path)):
        schema = dict(response_schema(spec, sample["path"], sample["method"], sample["status"]))
        # References point into the document: validate against a root that carries its components.
        schema["components"] = spec["components"]
        errors = list(OAS30Validator(schema).iter_errors(sample["body"]))
        label = f'{sample["method"].upper()} {sample["path"]} {sample["status"]}'
        if errors:
            failures += 1
            for e in errors[:5]:
                print(f"FAIL {label}: {'/'.join(map(str, e.absolute_path))}: {e.message}")
        else:
            print(f"ok   {label}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
