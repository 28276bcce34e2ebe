#!/usr/bin/env python3
"""Generates kincir's AMQP 0-9-1 method definitions.

Two stages, both deterministic:

  extract   the machine-readable protocol description published with RabbitMQ's codegen
            (amqp-rabbitmq-0.9.1.json) -> scripts/amqp_methods.json, a compact model holding only
            protocol facts: class and method ids and names, argument names, wire types, defaults.
  generate  scripts/amqp_methods.json -> include/kincir/rabbitmq/amqp/methods.hpp.

  scripts/amqp_codegen.py [--spec amqp-rabbitmq-0.9.1.json]    regenerate (extract only with --spec)
  scripts/amqp_codegen.py --check [--spec ...]                  exit 1 if a committed file is stale

The check runs as a ctest case; it re-extracts the model only when the upstream description is
given (--spec or the AMQP_SPEC_JSON environment variable).
"""

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "scripts", "amqp_methods.json")
HEADER = os.path.join(ROOT, "include", "kincir", "rabbitmq", "amqp", "methods.hpp")

# The classes a RabbitMQ client sends or receives (access.* is obsolete in 0-9-1).
CLASSES = ["connection", "channel", "exchange", "queue", "basic", "confirm", "tx"]

CPP_TYPES = {
    "octet": "std::uint8_t",
    "short": "std::uint16_t",
    "long": "std::uint32_t",
    "longlong": "std::uint64_t",
    "timestamp": "std::uint64_t",
    "shortstr": "std::string",
    "longstr": "std::string",
    "table": "FieldTable",
    "bit": "bool",
}


def extract(spec):
    domains = {name: wire for name, wire in spec["domains"]}
    classes = []
    by_name = {c["name"]: c for c in spec["classes"]}
    for cname in CLASSES:
        c = by_name[cname]
        methods = []
        for m in c["methods"]:
            args = []
            for a in m["arguments"]:
                wire = a.get("type") or domains[a["domain"]]
                arg = {"name": a["name"], "type": wire}
                if "default-value" in a and a["default-value"] != {}:
                    arg["default"] = a["default-value"]
                args.append(arg)
            methods.append({
                "name": m["name"],
                "id": m["id"],
                "synchronous": bool(m.get("synchronous", False)),
                "content": bool(m.get("content", False)),
                "arguments": args,
            })
        classes.append({"name": cname, "id": c["id"], "methods": methods})
    return {"version": [spec["major-version"], spec["minor-version"], spec["revision"]], "classes": classes}


def model_text(model):
    return json.dumps(model, indent=1, sort_keys=True) + "\n"


def camel(name):
    return "".join(part.capitalize() for part in name.replace("-", " ").split())


def snake(name):
    return name.replace("-", "_")


def replies(cls, method):
    """The methods that answer a synchronous method: its -ok, and get-empty for basic.get."""
    if not method["synchronous"]:
        return []
    names = {m["name"]: m for m in cls["methods"]}
    out = []
    for reply in (method["name"] + "-ok", "get-empty" if method["name"] == "get" else None):
        if reply in names:
            out.append(names[reply])
    return out


def default_of(arg):
    if "default" not in arg:
        return {"bit": "false", "shortstr": "", "longstr": "", "table": ""}.get(arg["type"], "0")
    value = arg["default"]
    if arg["type"] == "bit":
        return "true" if value else "false"
    if arg["type"] in ("shortstr", "longstr"):
        return json.dumps(value)
    return str(value)


def member(arg):
    d = default_of(arg)
    name = snake(arg["name"])
    t = CPP_TYPES[arg["type"]]
    if d == "":
        return f"  {t} {name};"
    return f"  {t} {name} = {d};"


def groups(args):
    """Arguments in wire order, consecutive bits grouped into one octet."""
    out = []
    for a in args:
        if a["type"] == "bit" and out and isinstance(out[-1], list):
            out[-1].append(a)
        elif a["type"] == "bit":
            out.append([a])
        else:
            out.append(a)
    return out


def encode_lines(args):
    lines = []
    for g in groups(args):
        if isinstance(g, list):
            terms = " | ".join(f"({snake(a['name'])} ? {1 << i}u : 0u)" for i, a in enumerate(g))
            lines.append(f"    w.u8(static_cast<std::uint8_t>({terms}));")
            continue
        n, t = snake(g["name"]), g["type"]
        if t == "table":
            lines.append(f"    detail::encode_table(w, {n});")
        elif t in ("shortstr", "longstr"):
            lines.append(f"    w.{t}({n});")
        else:
            lines.append(f"    w.{ {'octet': 'u8', 'short': 'u16', 'long': 'u32', 'longlong': 'u64', 'timestamp': 'u64'}[t] }({n});")
    return lines


def decode_lines(args):
    lines = []
    for g in groups(args):
        if isinstance(g, list):
            lines.append("    {")
            lines.append("      const std::uint8_t bits = r.u8();")
            for i, a in enumerate(g):
                lines.append(f"      {snake(a['name'])} = (bits & {1 << i}u) != 0;")
            lines.append("    }")
            continue
        n, t = snake(g["name"]), g["type"]
        if t == "table":
            lines.append(f"    detail::decode_table(r, {n}, limits);")
        elif t in ("shortstr", "longstr"):
            lines.append(f"    {n}.assign(r.{t}());")
        else:
            lines.append(f"    {n} = r.{ {'octet': 'u8', 'short': 'u16', 'long': 'u32', 'longlong': 'u64', 'timestamp': 'u64'}[t] }();")
    return lines


def generate(model):
    methods = []  # (cls, method)
    for c in model["classes"]:
        for m in c["methods"]:
            methods.append((c, m))

    def ident(c, m):
        return f"{snake(c['name'])}_{snake(m['name'])}"

    def struct(c, m):
        return camel(c["name"]) + camel(m["name"])

    out = []
    emit = out.append
    emit("// Generated by scripts/amqp_codegen.py from scripts/amqp_methods.json. Do not edit.")
    emit("/// @file")
    emit("/// Every AMQP 0-9-1 method of the classes a RabbitMQ client uses (connection, channel, exchange,")
    emit("/// queue, basic, confirm, tx): one struct per method with its arguments, spec ids and flags,")
    emit("/// `Method` (a variant of them all) and `decode_method`, which dispatches on the spec's numbers.")
    emit("#pragma once")
    emit("")
    emit("#include <kincir/config.hpp>")
    emit("")
    emit("#include <kincir/rabbitmq/amqp/detail/wire.hpp>  // WireReader, WireWriter")
    emit("#include <kincir/rabbitmq/amqp/error.hpp>        // errc")
    emit("#include <kincir/rabbitmq/amqp/field_table.hpp>  // FieldTable arguments")
    emit("")
    emit("#include <array>         // kReplies")
    emit("#include <cstdint>       // argument types")
    emit("#include <span>          // method payloads")
    emit("#include <string>        // string arguments")
    emit("#include <string_view>   // kName")
    emit("#include <system_error>  // std::error_code")
    emit("#include <type_traits>   // std::remove_cvref_t")
    emit("#include <variant>       // Method")
    emit("")
    emit("// clang-format off")
    emit("namespace kincir::rabbitmq::amqp {")
    emit("")
    emit("/// A method's identity on the wire: class id in the high 16 bits, method id in the low 16.")
    emit("enum class MethodId : std::uint32_t {")
    for c, m in methods:
        emit(f"  {ident(c, m)} = ({c['id']}u << 16) | {m['id']}u,")
    emit("};")
    emit("")
    emit("/// The `MethodId` of (class id, method id).")
    emit("constexpr MethodId make_method_id(std::uint16_t class_id, std::uint16_t method_id) noexcept {")
    emit("  return static_cast<MethodId>((static_cast<std::uint32_t>(class_id) << 16) | method_id);")
    emit("}")
    emit("constexpr std::uint16_t class_id_of(MethodId id) noexcept { return static_cast<std::uint16_t>(static_cast<std::uint32_t>(id) >> 16); }")
    emit("constexpr std::uint16_t method_id_of(MethodId id) noexcept { return static_cast<std::uint16_t>(static_cast<std::uint32_t>(id) & 0xFFFFu); }")
    emit("")
    for c, m in methods:
        rep = replies(c, m)
        flags = []
        if m["synchronous"]:
            flags.append("synchronous")
        if m["content"]:
            flags.append("carries content")
        emit(f"/// {c['name']}.{m['name']} ({c['id']}, {m['id']}){': ' + ', '.join(flags) if flags else ''}.")
        emit(f"struct {struct(c, m)} {{")
        emit(f"  static constexpr MethodId kId = MethodId::{ident(c, m)};")
        emit(f"  static constexpr std::uint16_t kClassId = {c['id']};")
        emit(f"  static constexpr std::uint16_t kMethodId = {m['id']};")
        emit(f"  static constexpr std::string_view kName = \"{c['name']}.{m['name']}\";")
        emit(f"  static constexpr bool kSynchronous = {'true' if m['synchronous'] else 'false'};")
        emit(f"  static constexpr bool kHasContent = {'true' if m['content'] else 'false'};")
        emit(f"  static constexpr std::array<MethodId, {len(rep)}> kReplies = {{{', '.join('MethodId::' + ident(c, r) for r in rep)}}};")
        if m["arguments"]:
            emit("")
        for a in m["arguments"]:
            emit(member(a))
        emit("")
        nowait = [a for a in m["arguments"] if a["name"] in ("nowait", "no-wait")]
        if m["synchronous"] and nowait:
            body = f"return !{snake(nowait[0]['name'])};"
        else:
            body = f"return {'true' if m['synchronous'] else 'false'};"
        emit("  /// True when the peer answers this method (synchronous and no-wait not set).")
        emit(f"  [[nodiscard]] bool expects_reply() const noexcept {{ {body} }}")
        enc = encode_lines(m["arguments"])
        dec = decode_lines(m["arguments"])
        if enc:
            emit("  void encode_arguments(detail::WireWriter& w) const {")
            out.extend(enc)
            emit("  }")
        else:
            emit("  void encode_arguments(detail::WireWriter& /*w*/) const {}")
        uses_limits = any(a["type"] == "table" for a in m["arguments"])
        if dec:
            emit(f"  void decode_arguments(detail::WireReader& r, const FieldLimits& {'limits' if uses_limits else '/*limits*/'}) {{")
            out.extend(dec)
            emit("  }")
        else:
            emit("  void decode_arguments(detail::WireReader& /*r*/, const FieldLimits& /*limits*/) {}")
        emit(f"  friend bool operator==(const {struct(c, m)}&, const {struct(c, m)}&) = default;")
        emit("};")
        emit("")
    emit("/// Any method; the alternatives are in spec order.")
    emit("using Method = std::variant<")
    for i, (c, m) in enumerate(methods):
        emit(f"    {struct(c, m)}{',' if i + 1 < len(methods) else '>;'}")
    emit("")
    emit("/// A method's name, flags and replies, looked up by id.")
    emit("struct MethodInfo {")
    emit("  MethodId id;")
    emit("  std::string_view name;")
    emit("  bool synchronous;")
    emit("  bool has_content;")
    emit("};")
    emit("")
    emit("/// Every method, in spec order.")
    emit(f"inline constexpr std::array<MethodInfo, {len(methods)}> kMethods = {{{{")
    for c, m in methods:
        s = struct(c, m)
        emit(f"    {{{s}::kId, {s}::kName, {s}::kSynchronous, {s}::kHasContent}},")
    emit("}};")
    emit("")
    emit("/// The description of a method, or nullptr for an id this codec does not know.")
    emit("constexpr const MethodInfo* find_method(MethodId id) noexcept {")
    emit("  for (const auto& info : kMethods)")
    emit("    if (info.id == id) return &info;")
    emit("  return nullptr;")
    emit("}")
    emit("")
    emit("/// True when `reply` answers the synchronous method `request` (its -ok, or basic.get-empty).")
    emit("constexpr bool is_reply_to(MethodId request, MethodId reply) noexcept {")
    emit("  switch (request) {")
    for c, m in methods:
        if replies(c, m):
            s = struct(c, m)
            emit(f"    case MethodId::{ident(c, m)}: for (auto r : {s}::kReplies) if (r == reply) return true; return false;")
    emit("    default: return false;")
    emit("  }")
    emit("}")
    emit("")
    emit("/// The id of the method held by `m`.")
    emit("inline MethodId method_id(const Method& m) noexcept {")
    emit("  return std::visit([](const auto& x) noexcept { return std::remove_cvref_t<decltype(x)>::kId; }, m);")
    emit("}")
    emit("")
    emit("/// Decodes a method frame's payload (class id, method id, arguments) into `out` and returns")
    emit("/// its id. Errors: `errc::unknown_method`, `errc::malformed_method` (truncated or bytes left")
    emit("/// over), field-table errors; never a crash, and allocations bounded by the payload's size.")
    emit("KINCIR_DECL MethodId decode_method(std::span<const std::uint8_t> payload, Method& out, std::error_code& ec,")
    emit("                                   const FieldLimits& limits = {}) {")
    emit("  detail::WireReader r(payload, errc::malformed_method);")
    emit("  const std::uint16_t class_id = r.u16();")
    emit("  const std::uint16_t method = r.u16();")
    emit("  const MethodId id = make_method_id(class_id, method);")
    emit("  if (!r.ok()) {")
    emit("    ec = r.error();")
    emit("    return id;")
    emit("  }")
    emit("  switch (id) {")
    for c, m in methods:
        emit(f"    case MethodId::{ident(c, m)}: out.emplace<{struct(c, m)}>().decode_arguments(r, limits); break;")
    emit("    default: ec = errc::unknown_method; return id;")
    emit("  }")
    emit("  if (r.ok() && !r.at_end()) r.fail(errc::malformed_method);")
    emit("  ec = r.error();")
    emit("  return id;")
    emit("}")
    emit("")
    emit("/// Decodes a payload that must hold method `M`: another method is `errc::unexpected_frame`.")
    emit("template <class M>")
    emit("void decode_method_as(std::span<const std::uint8_t> payload, M& out, std::error_code& ec,")
    emit("                      const FieldLimits& limits = {}) {")
    emit("  detail::WireReader r(payload, errc::malformed_method);")
    emit("  const std::uint16_t class_id = r.u16();")
    emit("  const std::uint16_t method = r.u16();")
    emit("  if (r.ok() && (class_id != M::kClassId || method != M::kMethodId)) {")
    emit("    ec = errc::unexpected_frame;")
    emit("    return;")
    emit("  }")
    emit("  out.decode_arguments(r, limits);")
    emit("  if (r.ok() && !r.at_end()) r.fail(errc::malformed_method);")
    emit("  ec = r.error();")
    emit("}")
    emit("")
    emit("/// Appends class id, method id and arguments of `m` (a method payload) to the writer.")
    emit("template <class M>")
    emit("void encode_method(detail::WireWriter& w, const M& m) {")
    emit("  w.u16(M::kClassId);")
    emit("  w.u16(M::kMethodId);")
    emit("  m.encode_arguments(w);")
    emit("}")
    emit("")
    emit("}  // namespace kincir::rabbitmq::amqp")
    emit("// clang-format on")
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default=os.environ.get("AMQP_SPEC_JSON"),
                        help="RabbitMQ's amqp-rabbitmq-0.9.1.json (to re-extract the model)")
    parser.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 if stale")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--header", default=HEADER)
    args = parser.parse_args()

    stale = []
    if args.spec:
        with open(args.spec, encoding="utf-8") as f:
            text = model_text(extract(json.load(f)))
        if args.check:
            with open(args.model, encoding="utf-8") as f:
                if f.read() != text:
                    stale.append(args.model)
        else:
            with open(args.model, "w", encoding="utf-8") as f:
                f.write(text)
    with open(args.model, encoding="utf-8") as f:
        header = generate(json.load(f))
    if args.check:
        try:
            with open(args.header, encoding="utf-8") as f:
                if f.read() != header:
                    stale.append(args.header)
        except FileNotFoundError:
            stale.append(args.header)
        if stale:
            print("out of date (run scripts/amqp_codegen.py): " + ", ".join(stale), file=sys.stderr)
            return 1
        print("generated AMQP code is up to date" + ("" if args.spec else " (model not re-extracted: no --spec)"))
        return 0
    with open(args.header, "w", encoding="utf-8") as f:
        f.write(header)
    return 0


if __name__ == "__main__":
    sys.exit(main())
