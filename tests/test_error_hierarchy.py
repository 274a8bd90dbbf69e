"""The error hierarchy: every catalogue kind has its own class under its area's class,
carries the values its templates were filled with, and every call site names a form
(variant) and fields its kind really has."""

from __future__ import annotations

import ast
import pickle
import string
from pathlib import Path

import pytest

from slugbuild import errors

SRC = Path(errors.__file__).parent

# Kinds whose text a call site still composes, in files another area owns
# (issue 15): each is a template holding nothing but one field.
STILL_COMPOSED: dict[str, str] = {}


@pytest.mark.parametrize("kind", list(errors.CATALOG.values()), ids=lambda kind: kind.code)
def test_every_kind_has_its_own_class_under_an_area(kind):
    assert kind.area in errors.AREAS
    assert kind.area is not errors.SlugbuildError
    assert issubclass(kind.exception, kind.area)
    assert kind.exception.kind is kind
    assert errors.exception_class(kind.code) is kind.exception
    values = {name: "X" for name in kind.fields}
    for variant in ([None] if kind.found else []) + list(kind.variants):
        raised = kind.error(variant=variant, **values)
        assert type(raised) is kind.exception
        assert isinstance(raised, kind.area) and isinstance(raised, errors.SlugbuildError)
        assert raised.code == kind.code
        assert raised.render().startswith(f" !     Error [{kind.code}]: ")


def test_the_exception_classes_are_distinct_and_named_after_their_code():
    classes = [kind.exception for kind in errors.CATALOG.values()]
    assert len(set(classes)) == len(classes)
    assert errors.PROCFILE_MALFORMED.exception.__name__ == "ProcfileMalformedError"
    assert errors.INTERNAL_ERROR.exception.__name__ == "InternalError"
    assert errors.INTERNAL_ERROR.exception is not errors.InternalError  # the area's class


def test_library_users_branch_on_classes_and_read_typed_fields():
    raised = errors.PROCFILE_MALFORMED.error(variant="no-command", line=3, name="web",
                                             text="web:")
    assert isinstance(raised, errors.InputError)
    assert not isinstance(raised, (errors.PublishError, errors.SlugError))
    with pytest.raises(errors.InputError) as caught:
        raise raised
    assert caught.value.line == 3  # the value as given, not its text
    assert caught.value.fields == {"line": 3, "name": "web", "text": "web:",
                                   "variant": "no-command"}

    limit = errors.SLUG_LIMIT_EXCEEDED.error(variant="entries", path="s.tgz", limit=10,
                                            variable="SLUGBUILD_MAX_SLUG_ENTRIES")
    assert isinstance(limit, errors.SlugError)
    assert limit.fields["variant"] == "entries" and limit.limit == 10


def test_a_copy_of_an_error_keeps_its_class_and_fields():
    raised = errors.UNSAFE_SLUG.error(variant="below-link", member="a/b", link="a")
    copied = errors.SlugbuildError(raised.code, raised.title, raised.found, raised.action)
    assert type(copied) is errors.UNSAFE_SLUG.exception
    replaced = raised.replacing("a/b", "c/d")
    assert type(replaced) is type(raised) and replaced.member == "c/d"
    assert "c/d" in replaced.found
    unpickled = pickle.loads(pickle.dumps(raised))
    assert type(unpickled) is type(raised) and unpickled.fields == raised.fields
    assert unpickled.render() == raised.render()


def test_field_names_never_shadow_the_error_s_own_attributes():
    raised = errors.TOOL_FAILED.error(command="strip", exit_code=1, output="last words")
    assert raised.output == "last words" and raised.exit_code == 1


def test_an_unknown_variant_or_a_missing_one_is_a_bug_not_a_message():
    with pytest.raises(KeyError):
        errors.UNSAFE_SLUG.error(variant="no-such-form", member="x")
    with pytest.raises(TypeError):
        errors.UNSAFE_SLUG.error(member="x")  # a kind made of variants needs one


def _bare(template: str) -> bool:
    """A template that is nothing but one field: prose composed by the caller."""
    parsed = [part for part in string.Formatter().parse(template) if part != ("", None, None, None)]
    return len(parsed) == 1 and not parsed[0][0].strip() and parsed[0][1] is not None


def test_no_kind_is_an_empty_shell():
    shells = set()
    for kind in errors.CATALOG.values():
        forms = ([kind.templates()] if kind.found else []) + [
            kind.templates(variant) for variant in kind.variants]
        if any(_bare(found) or _bare(action) for found, action in forms):
            shells.add(kind.code)
    assert shells == set(STILL_COMPOSED)


def _error_calls():
    """(file, line, kind name, variant or None, keyword names, has **values) of every
    ``errors.NAME.error(...)`` call in the package."""
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "error"):
                continue
            owner = node.func.value
            if not (isinstance(owner, ast.Attribute) and isinstance(owner.value, ast.Name)
                    and owner.value.id == "errors"):
                continue
            keywords = {k.arg for k in node.keywords if k.arg is not None}
            spread = any(k.arg is None for k in node.keywords)
            variant = next((k.value for k in node.keywords if k.arg == "variant"), None)
            yield (path.relative_to(SRC), node.lineno, owner.attr, variant, keywords, spread)


def test_every_call_site_names_a_real_form_and_fills_its_fields():
    problems = []
    for path, line, name, variant, keywords, spread in _error_calls():
        kind = getattr(errors, name)
        if isinstance(variant, ast.Constant):
            if variant.value not in kind.variants:
                problems.append(f"{path}:{line}: {name} has no variant {variant.value!r}")
                continue
            forms = [variant.value]
        elif variant is None:
            if not kind.found:
                problems.append(f"{path}:{line}: {name} needs a variant")
                continue
            forms = [None]
        else:  # chosen at run time: any of them
            forms = list(kind.variants) + ([None] if kind.found else [])
        if spread:
            continue  # values passed as **mapping: checked by the tests that raise them
        for form in forms:
            found, action = kind.templates(form)
            missing = set(errors.template_fields(kind.title, found, action)) - keywords
            if missing and variant is not None and not isinstance(variant, ast.Constant):
                continue  # a run-time choice: other forms may be the ones it makes
            if missing:
                problems.append(f"{path}:{line}: {name} ({form}) lacks {sorted(missing)}")
    assert problems == []
