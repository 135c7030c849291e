"""Pages generated at build time (mkdocs-gen-files), so none is copied by hand:

* ``cli.md`` from the typer app itself;
* ``http-api.md`` from the server's OpenAPI schema (built around a tiny random model, which
  changes no route, parameter or response);
* ``api.md`` with one mkdocstrings entry per name in ``dinomask.__all__``;
* ``results.md`` and ``changelog.md`` from ``benchmarks/RESULTS.md`` and ``CHANGELOG.md``.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mkdocs_gen_files

ROOT = Path(__file__).resolve().parent.parent


def cli_page() -> str:
    import typer
    from typer.cli import get_docs_for_click

    from dinomask.cli import app

    command = typer.main.get_command(app)
    ctx = typer.Context(command)
    return get_docs_for_click(obj=command, ctx=ctx, name="dinomask", title="Command line reference")


def _schema_type(schema: dict) -> str:
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(_schema_type(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " | ".join(f"`{v}`" for v in schema["enum"])
    kind = schema.get("type", "object")
    return f"{kind} ({schema['format']})" if "format" in schema else kind


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def http_page() -> str:
    from dinomask.backbones import load_backbone, random_backbone_dir
    from dinomask.serve.app import ServeConfig, create_app

    with tempfile.TemporaryDirectory() as tmp:
        model = random_backbone_dir(Path(tmp) / "m", hidden_size=32, layers=1)
        schema = create_app(load_backbone(str(model), device="cpu", runtime="torch", dtype="float32"),
                            ServeConfig()).openapi()
    components = schema.get("components", {}).get("schemas", {})
    lines = ["# HTTP endpoints", "",
             f"Generated from the OpenAPI schema of `dinomask serve` {schema['info']['version']} "
             "(`GET /openapi.json` on a running server gives the same; `/docs` renders it).", ""]
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            lines += [f"## `{method.upper()} {path}`", ""]
            text = operation.get("description") or operation.get("summary") or ""
            if text:
                lines += [text.strip(), ""]
            params = operation.get("parameters", [])
            body = operation.get("requestBody", {}).get("content", {})
            if params:
                lines += ["| parameter | in | type | required | description |", "|---|---|---|---|---|"]
                lines += [f"| `{p['name']}` | {p['in']} | {_cell(_schema_type(p.get('schema', {})))} | "
                          f"{'yes' if p.get('required') else 'no'} | {_cell(p.get('description', p.get('schema', {}).get('description', '')))} |"
                          for p in params]
                lines.append("")
            for media, content in body.items():
                ref = content.get("schema", {})
                fields = components.get(_schema_type(ref), ref).get("properties", {})
                required = set(components.get(_schema_type(ref), ref).get("required", []))
                if fields:
                    lines += [f"Body (`{media}`):", "", "| field | type | required | description |", "|---|---|---|---|"]
                    lines += [f"| `{name}` | {_cell(_schema_type(field))} | {'yes' if name in required else 'no'} | "
                              f"{_cell(field.get('description', ''))} |" for name, field in fields.items()]
                    lines.append("")
            lines += ["| status | meaning |", "|---|---|"]
            lines += [f"| {code} | {_cell(response.get('description', ''))} |"
                      for code, response in operation.get("responses", {}).items()]
            lines.append("")
    return "\n".join(lines)


def api_page() -> str:
    import dinomask

    lines = ["# Python API reference", "",
             "Every public name of the `dinomask` package (`dinomask.__all__`), from its docstring.", ""]
    for name in sorted(dinomask.__all__, key=str.lower):
        if name.startswith("__"):
            continue
        lines += [f"::: dinomask.{name}", ""]
    return "\n".join(lines)


def include(path: str, title: str) -> str:
    text = (ROOT / path).read_text()
    return text if text.lstrip().startswith("# ") else f"# {title}\n\n{text}"


pages = {
    "cli.md": cli_page(),
    "http-api.md": http_page(),
    "api.md": api_page(),
    "results.md": include("benchmarks/RESULTS.md", "Benchmark results"),
    "changelog.md": include("CHANGELOG.md", "Changelog"),
}
for name, text in pages.items():
    with mkdocs_gen_files.open(name, "w") as handle:
        handle.write(text)
print(json.dumps({"generated": sorted(pages)}))
