"""Validation of a mapping against a JSON schema, with the schema's defaults filled in, and its
problems reported per key: ``(path, what is wrong)``, a missing or unknown key at its own
path, a subschema's own ``message`` where it gives one, and no error that only follows
from another (:func:`_problems`).  Torch-free; :mod:`prunebench.config` validates the
config and the methods' settings with it."""
from __future__ import annotations


def _path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<top level>"


def _validator(schema: dict):
    from jsonschema import Draft202012Validator, validators

    base = Draft202012Validator

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = _copy(sub["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    # an integer is an int: JSON Schema counts 2.0 as one, a batch of 2.0 is refused here
    checker = base.TYPE_CHECKER.redefine("integer", lambda _c, x: isinstance(x, int) and not isinstance(x, bool))
    cls = validators.extend(base, {"properties": set_defaults}, type_checker=checker)
    return cls(schema)


def _copy(v):
    import copy

    return copy.deepcopy(v)


NAME_RULE = "letters, digits, '.', '_' and '-', starting with a letter or digit, at most 100 characters"


def _problems(validator, instance, prefix: tuple = ()) -> list[tuple[tuple, str]]:
    """``(path, what is wrong)`` for every schema error; a missing or unknown key is reported
    at its own path (``benchmark.input_lengths``), not at its parent's.  A subschema's
    ``message`` replaces the validator's (``screen``: "applies only with criterion 'ppl'"),
    and an error of an ``if``'s ``then``/``else`` is left out where a key the ``if`` reads
    has an error of its own (a misspelt ``criterion`` is that one error)."""
    found = [(err, _reported(err, prefix)) for err in validator.iter_errors(instance)]
    out = []
    for err, reported in found:
        cond = _condition(err, validator.schema)
        if cond is not None:
            depth, keys = cond
            path = prefix + tuple(err.absolute_path)
            heads = {path[:len(path) - depth] + (k,) for k in keys}
            if any(p[:len(h)] == h for other, rep in found if other is not err for p, _ in rep for h in heads):
                continue
        out += reported
    # one "required" error per missing key, each listing them all: every problem once
    return sorted(dict.fromkeys(out), key=lambda t: [str(x) for x in t[0]])


def _reported(err, prefix: tuple) -> list[tuple[tuple, str]]:
    """What :func:`_problems` reports of one schema error."""
    path, inst = prefix + tuple(err.absolute_path), err.instance
    if err.validator == "required" and isinstance(inst, dict):
        return [(path + (k,), "required, missing") for k in err.validator_value if k not in inst]
    if err.validator == "additionalProperties" and err.validator_value is False and isinstance(inst, dict):
        allowed = err.schema.get("properties", {})
        return [(path + (k,), f"unknown key; allowed here: {sorted(allowed)}") for k in inst if k not in allowed]
    if "propertyNames" in err.schema_path:
        reserved = "; 'base' is reserved" if path == ("methods",) and inst == "base" else ""
        return [(path + (inst,), f"name {inst!r} is not allowed ({NAME_RULE}){reserved}")]
    if isinstance(err.schema, dict) and isinstance(err.schema.get("message"), str):
        return [(path, f"{err.schema['message']} (got {inst!r})")]
    return [(path, err.message)]


#: keywords after which the schema path names a property (not a keyword)
_NAMING = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")
#: keywords whose subschema applies one level down in the instance
_DOWN = ("properties", "patternProperties", "additionalProperties", "items", "prefixItems")


def _condition(err, schema) -> tuple[int, set] | None:
    """For an error inside the ``then``/``else`` of an ``if``: how many levels below the
    instance the ``if`` reads the error lies, and the keys the ``if`` reads; else None."""
    node, prev, found = schema, None, None
    parts = list(err.schema_path)
    for i, part in enumerate(parts):
        if part == "$ref" and prev not in _NAMING:
            return None  # through a reference: no dependence inferred
        if part in ("then", "else") and prev not in _NAMING and isinstance(node, dict) and "if" in node:
            found = (i, node["if"])
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return None
        prev = part
    if found is None:
        return None
    i, cond = found
    depth = sum(1 for j, part in enumerate(parts[i + 1:]) if part in _DOWN and (j == 0 or parts[i + j] not in _NAMING))
    keys: set = set()

    def read(s):
        if isinstance(s, dict):
            keys.update(s.get("properties", {}) if isinstance(s.get("properties"), dict) else ())
            keys.update(k for k in s.get("required", []) if isinstance(k, str))
            for k, v in s.items():
                if k not in ("properties", "required"):
                    read(v)
        elif isinstance(s, list):
            for v in s:
                read(v)

    read(cond)
    return depth, keys


def settings_problems(schema: dict, settings: dict) -> list[tuple[str, str]]:
    """``(dotted key, what is wrong)`` of ``settings`` against a method's ``schema``; fills
    the schema's defaults into ``settings`` (in place)."""
    return [(_path(p), msg) for p, msg in _problems(_validator(schema), settings)]
