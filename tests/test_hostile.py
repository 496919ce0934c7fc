"""Hostile input: what an attacker, a looping model or an unlucky operator feeds the platform.

Each case states its expected outcome. The module runs under an address-space limit (a few GiB
above what the test process already maps), so a regression to unbounded memory fails here with a
MemoryError instead of taking the machine down; the 1 MB-line rule sweep runs in a child process
under the same kind of limit and a wall-clock cap.
"""

from __future__ import annotations

import gzip
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
import zstandard

from conftest import HEADROOM
from prox_dagster import shards as shards_module
from prox_dagster.chunking import chunk_documents, number_line, split_numbered
from prox_dagster.execute import execute_document, growth_allowance
from prox_dagster.programs import MAX_LINE_NUMBER, ParsedProgram, _parse_into, parse_program
from prox_dagster import atomic_writes
from prox_dagster.atomic_writes import write_atomic
from prox_dagster.shards import MAX_DOCUMENT_LINES
from raw_reading import read_raw_shard
from prox_dagster.store import ShardStore, list_raw_shards, locate_raw_shard

pytestmark = pytest.mark.usefixtures("memory_limit")  # conftest: an address-space limit


# --- programs ---------------------------------------------------------------------------------

def _chunk(n_lines: int = 50) -> tuple[str, int]:
    text = "\n".join(f"line {i}: o o o o words of a sentence." for i in range(n_lines))
    return text, n_lines


@pytest.mark.parametrize("calls, source, target", [(22, "o", "oo"), (100, "o", "oooooooo"),
                                                   (512, "o", "oo")])
def test_a_looping_normalize_cannot_grow_the_text_beyond_its_allowance(calls, source, target):
    # 22 doublings turned 2.5 KB into 671 MB; 100 x "o" -> "oooooooo" took a 23 GB machine down
    text, n_lines = _chunk()
    program = "\n".join(f'normalize(source_str="{source}", target_str="{target}")'
                        for _ in range(calls))
    result = execute_document(text, "keep_doc()", [(0, n_lines - 1, program)])
    assert len(result.text) <= len(text) + growth_allowance(len(text) + 1)
    assert result.n_errors >= 1  # the calls past the allowance are errors, counted


PARSE_SHAPES = {
    "prose": "Here is the program:\n", "word": "x\n", "unclosed": "foo(\n", "comment": "#(\n",
    "unknown_calls": "bad(1)\n", "calls_on_one_line": "f() ", "dotted": "a.b.",
    "open_parens": "(", "quotes": "'\"", "triple_quote": '"""x', "semicolons": "x;",
    "fences": "```\n", "newlines": "\n", "spaces": " ", "backslashes": "\\",
    "canonical_then_prose": "remove_lines(1, 2)\nHere:\n", "keep": "keep_chunk()\n",
    "normalize": 'normalize("a", "b")\n', "unclosed_string": 'normalize("',
}


def _best_time(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


@pytest.mark.parametrize("shape", sorted(PARSE_SHAPES))
def test_parsing_cost_grows_linearly_with_the_program(shape):
    # 2,000 prose lines took 1.6 s and 8,000 took 33 s: quadratic. Four times the program may
    # cost four times the time (eight, with noise), plus a few milliseconds of slack.
    unit = PARSE_SHAPES[shape]
    small, large = ((unit * (size // len(unit) + 1))[:size] for size in (16_000, 64_000))
    t_small = _best_time(lambda: parse_program(small, "chunk"))
    t_large = _best_time(lambda: parse_program(large, "chunk"))
    assert t_large <= 8 * t_small + 0.02, (shape, t_small, t_large)
    assert parse_program(large, "chunk").errors  # none of these is a clean program


# One table drives both parse paths: the regex fast path (through parse_program) and the ast
# path alone must accept exactly the same calls and reject the rest with the same codes.
LANGUAGE = [
    ("remove_lines(line_start=1, line_end=3)", [("remove_lines", {"line_start": 1,
                                                                  "line_end": 3})], []),
    ("remove_lines(1, 3)", [("remove_lines", {"line_start": 1, "line_end": 3})], []),
    ("remove_lines(١, ٣)", [], ["syntax"]),  # Arabic-Indic digits: not Python integers
    ("remove_lines(line_start=١, line_end=٣)", [], ["syntax"]),
    ("remove_lines(１, ３)", [], ["syntax"]),  # fullwidth digits
    ("remove_lines(¹, ³)", [], ["syntax"]),  # superscripts
    ("remove_lines(1_0, 20)", [("remove_lines", {"line_start": 10, "line_end": 20})], []),
    ("remove_lines(0x1, 2)", [("remove_lines", {"line_start": 1, "line_end": 2})], []),
    (f"remove_lines(0, {MAX_LINE_NUMBER})", [("remove_lines", {
        "line_start": 0, "line_end": MAX_LINE_NUMBER})], []),
    (f"remove_lines(0, {MAX_LINE_NUMBER + 1})", [], ["bad_number"]),
    ("remove_lines(01, 2)", [], ["syntax"]),  # leading zeros are not Python
    ('normalize(source_str="a", target_str="b")', [("normalize", {"source_str": "a",
                                                                  "target_str": "b"})], []),
    ('normalize("a\\u0661", "b")', [("normalize", {"source_str": "a\u0661",
                                                   "target_str": "b"})], []),
    ('normalize(source_str="a")', [("normalize", {"source_str": "a", "target_str": ""})], []),
    ("keep_chunk()", [("keep_chunk", {})], []),
    ("keep_chunk(1)", [], ["bad_argument"]),
    ("drop_doc()", [], ["wrong_level"]),
    ("remove_lines(3, 1)", [], ["reversed_range"]),
    ("remove_lines(-1, 2)", [], ["bad_number"]),
    ("remove_lines(True, 2)", [], ["bad_argument"]),
]


@pytest.mark.parametrize("source, calls, errors", LANGUAGE)
def test_both_parse_paths_accept_the_same_language(source, calls, errors):
    fast = parse_program(source, "chunk")
    slow = ParsedProgram("chunk")
    _parse_into(slow, source)
    for parsed in (fast, slow):
        assert [(c.name, c.args) for c in parsed.calls] == calls, source
        assert [e.code for e in parsed.errors] == errors, source


def test_each_program_is_parsed_once_per_stage(monkeypatch):
    from prox_dagster import execute, pipeline
    from prox_dagster.refiners import build_refiner
    from prox_dagster.tokenization import load_tokenizer

    texts = [f"Title {i}\nHome\nAbout\nContact\n" + "A real sentence with words in it. " * 8
             for i in range(6)]
    raw = pl.DataFrame({"id": [f"d{i}" for i in range(6)], "text": texts})
    refiner, tokenizer = build_refiner("rules"), load_tokenizer()
    doc_refined = pipeline.refine_documents(raw, refiner).with_columns(
        pl.lit(True).alias("doc_keep"), pl.lit("keep_doc()").alias("doc_program"))
    chunked = pipeline.chunk_shard(doc_refined, tokenizer, max_tokens=40)
    assert chunked.height > len(texts)

    seen: list[str] = []
    real = execute.parse_program

    def counting(source, level, dialect="prox"):
        if level == "chunk":
            seen.append(source)
        return real(source, level, dialect)

    monkeypatch.setattr(pipeline, "parse_program", counting)
    monkeypatch.setattr(execute, "parse_program", counting)
    chunk_refined = pipeline.refine_chunks(chunked, refiner)
    assert len(seen) == chunked.height  # chunk_refined_shard: once each, for chunk_parse_ok
    seen.clear()
    pipeline.execute_shard(doc_refined, chunk_refined, tokenizer)
    assert len(seen) == chunked.height  # clean_shard: once each, to execute it


# --- raw files ----------------------------------------------------------------------------------

def _records(n: int, start: int = 0) -> bytes:
    return b"".join(json.dumps({"id": f"r{i}", "text": f"document {i} " + "w " * 50}).encode()
                    + b"\n" for i in range(start, start + n))


def _accounted(shard) -> int:
    return shard.documents.height + shard.quarantine.height


def test_a_zst_cut_inside_a_frame_keeps_the_records_before_and_says_where(tmp_path):
    frames = [zstandard.ZstdCompressor().compress(_records(100, 100 * k)) for k in range(3)]
    data = b"".join(frames)
    path = tmp_path / "cut.jsonl.zst"
    path.write_bytes(data[: len(frames[0]) + len(frames[1]) // 2])
    shard = read_raw_shard(path)
    assert shard.documents.height == 100  # every record of the whole first frame
    [row] = shard.quarantine.iter_rows(named=True)
    assert row["reason"].startswith("damaged file: cut.jsonl.zst cannot be read past "
                                    "compressed byte")
    assert "ends inside a frame" in row["reason"]
    assert row["byte_offset"] == len(_records(100))  # where the lost records begin


def test_every_frame_of_a_multi_frame_zst_is_read(tmp_path):
    path = tmp_path / "frames.jsonl.zst"
    path.write_bytes(b"".join(zstandard.ZstdCompressor().compress(_records(50, 50 * k))
                              for k in range(4)))
    shard = read_raw_shard(path)
    assert shard.documents.height == 200 and shard.quarantine.height == 0


def test_a_zst_cut_at_a_frame_boundary_inside_a_record_quarantines_the_partial_record(tmp_path):
    # frames of a streaming writer do not end at record boundaries: a cut there leaves half a
    # record, which is a quarantine row (a cut that also falls between records leaves a valid,
    # shorter file: no format can tell, as with a .jsonl cut after a newline)
    data = _records(100)
    middle = data.index(b"\n", len(data) // 2) - 10
    compressor = zstandard.ZstdCompressor()
    path = tmp_path / "boundary.jsonl.zst"
    path.write_bytes(compressor.compress(data[:middle]))  # the second frame is gone
    shard = read_raw_shard(path)
    assert _accounted(shard) == data[:middle].count(b"\n") + 1
    [row] = shard.quarantine.iter_rows(named=True)
    assert row["reason"].startswith("invalid JSON") and row["byte_offset"] > 0


@pytest.mark.parametrize("suffix, content, reason", [
    (".jsonl.zst", b"x" * 100, "zstd: "),
    (".jsonl.gz", b"x" * 100, "gzip: "),
    (".jsonl.zst", zstandard.ZstdCompressor().compress(_records(10)) + b"garbage!" * 8,
     "zstd: "),
])
def test_garbage_compressed_files_are_a_row_naming_the_file_not_an_exception(
        tmp_path, suffix, content, reason):
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(content)
    shard = read_raw_shard(path)
    assert shard.quarantine["reason"][-1].startswith(f"damaged file: junk{suffix}")
    assert reason in shard.quarantine["reason"][-1]
    assert shard.documents.height == (10 if b"garbage" in content else 0)


def test_a_truncated_gz_names_the_offsets(tmp_path):
    data = gzip.compress(_records(300))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    shard = read_raw_shard(path)
    assert 0 < shard.documents.height < 300
    row = shard.quarantine.row(-1, named=True)
    assert "cut.jsonl.gz" in row["reason"] and "compressed byte" in row["reason"]
    assert row["byte_offset"] == len(_records(shard.documents.height))


def test_a_bom_is_dropped_and_the_first_record_kept(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + _records(3))
    shard = read_raw_shard(path)
    assert shard.documents["id"].to_list() == ["r0", "r1", "r2"]
    assert shard.quarantine.height == 0


def test_records_that_cannot_be_serialized_or_stored_are_handled_one_by_one(tmp_path):
    # nested at every depth up to the recursion limit: somewhere json.loads still reads it and
    # json.dumps (for meta) no longer writes it, which failed the whole shard
    limit = sys.getrecursionlimit()
    lines = [json.dumps({"id": "ok", "text": "fine"})]
    lines += ['{"id": "deep-%d", "text": "t", "nested": %s}' % (depth, "[" * depth + "]" * depth)
              for depth in range(limit - 400, limit + 1)]
    lines += [
        '{"id": "surrogate", "text": "a\\ud800b", "src": "\\udfff"}',
        '{"id": "pair", "text": "emoji \\ud83d\\ude00"}',
        json.dumps({"id": "ok2", "text": "also fine"}),
    ]
    path = tmp_path / "odd.jsonl"
    path.write_text("\n".join(lines) + "\n")
    shard = read_raw_shard(path)  # one bad record never fails the shard
    assert _accounted(shard) == len(lines)
    docs = {row["id"]: row for row in shard.documents.iter_rows(named=True)}
    assert {"ok", "ok2", "surrogate", "pair"} <= set(docs)
    assert docs["surrogate"]["text"] == "a\ufffdb"
    assert json.loads(docs["surrogate"]["meta"]) == {"src": "\ufffd", "utf8_repaired": True}
    assert docs["pair"]["text"] == "emoji \U0001F600" and docs["pair"]["meta"] == "{}"
    reasons = [reason.split(":")[0] for reason in shard.quarantine["reason"]]
    assert set(reasons) == {"invalid JSON", "unserializable fields"}, reasons


def test_an_oversized_record_is_quarantined_by_its_head(tmp_path, monkeypatch):
    monkeypatch.setattr(shards_module, "MAX_RECORD_BYTES", 1 << 20)
    big = json.dumps({"id": "big", "text": "x" * (3 << 20)}).encode()
    path = tmp_path / "big.jsonl"
    path.write_bytes(_records(2) + big + b"\n" + _records(2, 2))
    shard = read_raw_shard(path)
    assert shard.documents["id"].to_list() == ["r0", "r1", "r2", "r3"]
    [row] = shard.quarantine.iter_rows(named=True)
    assert row["reason"].startswith(f"record too long: {len(big) + 1} bytes")
    assert row["raw"].startswith('{"id": "big"') and len(row["raw"]) == 4096
    assert row["line_no"] == 2 and row["byte_offset"] == len(_records(2))


def test_line_numbers_the_chunker_writes_are_ones_the_parser_accepts(tmp_path):
    too_many = "\n" * MAX_DOCUMENT_LINES  # MAX_DOCUMENT_LINES + 1 lines
    path = tmp_path / "lines.jsonl"
    path.write_text(json.dumps({"id": "long", "text": too_many}) + "\n" + json.dumps(
        {"id": "ok", "text": "fine"}) + "\n")
    shard = read_raw_shard(path)
    assert shard.documents["id"].to_list() == ["ok"]
    assert shard.quarantine["reason"][0].startswith(f"too many lines: {MAX_DOCUMENT_LINES + 1}")
    with pytest.raises(ValueError, match="document 0 of the batch has"):
        chunk_documents([too_many], tokenizer=None)
    # the last line a document may have is numbered as the parser allows
    last = number_line(MAX_LINE_NUMBER, "menu")
    assert split_numbered(last) == ([MAX_LINE_NUMBER], ["menu"])
    program = f"remove_lines(line_start={MAX_LINE_NUMBER}, line_end={MAX_LINE_NUMBER})"
    assert parse_program(program, "chunk").ok


def test_two_raw_files_with_one_key_are_reported_alone_and_other_shards_flow(tmp_path):
    for name in ("a.jsonl", "y.jsonl", "y.parquet", "z.jsonl.gz"):
        (tmp_path / name).write_bytes(b"")
    files, refused = list_raw_shards(str(tmp_path))
    assert sorted(files) == ["a", "z"] and list(refused) == ["y"]
    assert "shard 'y' has 2 raw files" in refused["y"] and "y.jsonl, y.parquet" in refused["y"]
    assert locate_raw_shard(str(tmp_path), "a").endswith("a.jsonl")
    with pytest.raises(shards_module.ShardError,
                       match=r"shard 'y' has 2 raw files .*y\.jsonl, y\.parquet"):
        locate_raw_shard(str(tmp_path), "y")


def test_files_with_a_near_miss_suffix_are_named_not_passed_over(tmp_path):
    for name in ("a.JSONL", "b.ndjson", "c.jsonl.bz2", "d.Parquet", "e.jsonl", "notes.txt",
                 ".hidden.json"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "a.JSONL.jsonl").write_bytes(b"")  # a shard whose key is the near miss's name
    files, refused = list_raw_shards(str(tmp_path))
    assert sorted(files) == ["a.JSONL", "e"]
    assert sorted(refused) == ["/a.JSONL", "/b.ndjson", "/c.jsonl.bz2", "/d.Parquet"]
    assert "rename it to 'a.jsonl'" in refused["/a.JSONL"]
    assert "rename it to 'd.parquet'" in refused["/d.Parquet"]
    assert ".jsonl.bz2 is not a raw shard format" in refused["/c.jsonl.bz2"]


def test_links_fifos_and_folders_in_the_raw_folder_are_refused_unread(tmp_path, instance):
    """A link to the worker's environment, a link to a JSONL file outside the raw folder, a FIFO
    and a folder with a shard's name: the sensor registers none of them and says why; a
    partition an operator registers by hand fails its step naming the file, and nothing of
    what they point at reaches the store."""
    from prox_dagster import definitions
    from prox_dagster.sample import write_sample_crawl

    write_sample_crawl(tmp_path, n_shards=1, docs_per_shard=4)
    raw = tmp_path / "raw"
    outside = tmp_path / "outside.jsonl"
    outside.write_text(json.dumps({"text": "CANARY-7f3a a document from outside the folder"})
                       + "\n")
    (raw / "env.jsonl").symlink_to("/proc/self/environ")
    (raw / "leak.jsonl").symlink_to(outside)
    os.mkfifo(raw / "pipe.jsonl")
    (raw / "folder.jsonl").mkdir()
    files, refused = list_raw_shards(str(raw))
    assert list(files) == ["sample-crawl.00000"]
    assert sorted(refused) == ["env", "folder", "leak", "pipe"]
    assert "is a symbolic link" in refused["env"] and "is a symbolic link" in refused["leak"]
    assert "is a FIFO" in refused["pipe"] and "is a folder" in refused["folder"]

    defs = definitions.build_definitions(data_dir=tmp_path)
    assert definitions.register_new_shards(defs, instance) == ["sample-crawl.00000"]
    instance.add_dynamic_partitions("shards", ["env", "leak", "pipe"])  # by hand
    for key, kind in (("env", "a symbolic link"), ("leak", "a symbolic link"),
                      ("pipe", "a FIFO")):
        result = definitions.materialize_shard(defs, instance, key)
        assert not result.success
        error = next(e for e in result.all_events
                     if e.event_type_value == "STEP_FAILURE").step_failure_data.error
        assert f"'{raw / (key + '.jsonl')}' is {kind}" in error.to_string()
    assert definitions.materialize_shard(defs, instance, "sample-crawl.00000").success
    written = [path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*.parquet")]
    assert not [name for name in written if any(key in name for key in ("env", "leak", "pipe"))]
    for path in tmp_path.rglob("*.parquet"):
        frame = pl.read_parquet(path)
        for column in [c for c, t in frame.schema.items() if t == pl.String]:
            assert not frame[column].str.contains("CANARY-7f3a|PATH=").any(), (path, column)
    # the reader refuses a link it is handed directly, too
    with pytest.raises(shards_module.ShardError, match="is a symbolic link"):
        read_raw_shard(raw / "leak.jsonl")


def test_a_240_character_shard_name_writes_and_leases(tmp_path):
    shard = "s" * 240  # legal: 240 + len(".parquet") <= 255
    store = ShardStore(tmp_path)
    store.write(pl.DataFrame({"a": [1]}), "raw_shard", shard)
    assert store.read("raw_shard", shard)["a"].to_list() == [1]
    with store.lease("raw_shard", shard, "run-1"):
        pass
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_temp_files_of_a_killed_writer_go_with_a_later_write_in_the_folder(tmp_path):
    target = tmp_path / "shard.parquet"
    prefix = atomic_writes._temp_prefix(target.name)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    killed_here = tmp_path / f"{prefix}{atomic_writes._HOST}-{dead}.abc.tmp"
    old_elsewhere = tmp_path / f"{prefix}otherhst-1.def.tmp"
    live_elsewhere = tmp_path / f"{prefix}otherhst-2.ghi.tmp"
    other_target = tmp_path / f"{atomic_writes._temp_prefix('other.parquet')}" \
                              f"{atomic_writes._HOST}-{dead}.jkl.tmp"
    not_ours = tmp_path / ".someone-elses.tmp"
    for path in (killed_here, old_elsewhere, live_elsewhere, other_target, not_ours):
        path.write_bytes(b"partial")
    hour_ago = time.time() - 3600
    os.utime(old_elsewhere, (hour_ago, hour_ago))
    write_atomic(target, lambda tmp: tmp.write_bytes(b"done"))
    assert target.read_bytes() == b"done"
    # a dead writer's temps go, whichever target they were for
    assert not killed_here.exists() and not old_elsewhere.exists() and not other_target.exists()
    # another host's writer that wrote a moment ago may be alive; a file not named as ours stays
    assert live_elsewhere.exists() and not_ours.exists()

    # the folder is swept once per SWEEP_SECONDS per process, not on every write
    again = tmp_path / f"{prefix}{atomic_writes._HOST}-{dead}.xyz.tmp"
    again.write_bytes(b"partial")
    write_atomic(target, lambda tmp: tmp.write_bytes(b"twice"))
    assert again.exists()
    atomic_writes._swept[tmp_path] -= atomic_writes.SWEEP_SECONDS
    write_atomic(target, lambda tmp: tmp.write_bytes(b"thrice"))
    assert not again.exists() and target.read_bytes() == b"thrice"


# --- rules and a huge document -------------------------------------------------------------------

RULES_WORKER = Path(__file__).with_name("hostile_rules.py")


@pytest.mark.slow
def test_every_rule_is_linear_on_1_mb_adversarial_lines():
    # each rule of the rules and classifier refiners on 1 MB lines built to break regexes
    # (spaces around separators, "cookie." repeated, mojibake runs, ...), within a budget of
    # 5,000 times a plain str.split of the same line measured in the same run (the slowest
    # takes about 1,000 times; the quadratic separator rule took 112 s on 100 KB)
    lines = _run_worker("rules", timeout=900)
    failures = [row for row in lines if row["seconds"] > 5000 * row["split_seconds"] + 0.05]
    assert len(lines) == len({(r["shape"], r["rule"]) for r in lines}) > 200
    assert not failures, failures


@pytest.mark.slow
def test_a_16_mb_single_line_document_runs_every_stage_in_bounded_memory():
    # a 51 MB one-line document took 54 s and 6 GB (the tokenizer's encoding of all of it);
    # counting in pieces keeps the stages' peak near the size of a few copies of the text
    [result] = _run_worker("huge", timeout=600)
    assert result["statuses"] == ["kept"]
    assert result["tokens_in"] > 3_000_000 and result["tokens_out"] == result["tokens_in"]
    assert result["tokens_written"] == result["tokens_out"] + 1  # and its EOS
    assert result["peak_rise_bytes"] < 1_500 << 20, result


def _run_worker(what: str, timeout: int) -> list[dict]:
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (HEADROOM + (3 << 30), resource.RLIM_INFINITY))

    proc = subprocess.run([sys.executable, str(RULES_WORKER), what], capture_output=True,
                          text=True, timeout=timeout, preexec_fn=limit,
                          cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def test_a_decompression_bomb_stops_at_the_shards_cap_keeping_what_came_before(tmp_path):
    """Three records, then a gigabyte of zeros compressed to a few kilobytes: reading stops at
    the cap with one quarantine row that says where, the three documents are kept."""
    path = tmp_path / "bomb.jsonl.zst"
    head = b"".join(json.dumps({"text": f"page {i}"}).encode() + b"\n" for i in range(3))
    zeros = bytes(1 << 24)
    with open(path, "wb") as out, zstandard.ZstdCompressor(level=3).stream_writer(out) as w:
        w.write(head)
        for _ in range(64):  # 1 GiB
            w.write(zeros)
    assert path.stat().st_size < 1 << 20
    from prox_dagster.parquet_batches import FrameSink

    documents, quarantine = FrameSink(), FrameSink()
    stats = shards_module.stream_raw_shard(path, documents, quarantine, max_bytes=1 << 22)
    assert documents.frame["text"].to_list() == ["page 0", "page 1", "page 2"]
    (reason,) = quarantine.frame["reason"].to_list()
    assert reason.startswith("over the shard's cap: bomb.jsonl.zst is not read past "
                             f"decompressed byte {1 << 22}")
    assert "the 3 lines before it are kept" in reason and stats["quarantined"] == 1
    assert len(quarantine.frame["raw"][0]) <= 4096


def test_a_file_of_more_lines_than_the_cap_stops_there_with_one_row(tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text("".join(json.dumps({"text": f"page {i}"}) + "\n" for i in range(100)))
    from prox_dagster.parquet_batches import FrameSink

    documents, quarantine = FrameSink(), FrameSink()
    shards_module.stream_raw_shard(path, documents, quarantine, max_lines=10)
    assert documents.frame.height == 10
    (reason,) = quarantine.frame["reason"].to_list()
    assert reason.startswith("over the shard's cap of 10 lines: many.jsonl is not read past "
                             "line 10")


def test_an_oversized_parquet_record_is_quarantined_by_its_head(tmp_path, monkeypatch):
    monkeypatch.setattr(shards_module, "MAX_RECORD_BYTES", 1 << 20)
    path = tmp_path / "big.parquet"
    pl.DataFrame({"id": ["r0", "big", "r2"],
                  "text": ["a page", "x" * (3 << 20), "another page"]}).write_parquet(path)
    shard = read_raw_shard(path)
    assert shard.documents["id"].to_list() == ["r0", "r2"]
    [row] = shard.quarantine.iter_rows(named=True)
    assert row["reason"].startswith("record too long: ") and row["line_no"] == 1
    assert len(row["raw"]) == 4096


def test_a_shard_key_too_long_for_its_files_is_refused_and_the_longest_runs_end_to_end(
        tmp_path, instance):
    """The sensor registers a key only if every file the stages derive from it fits a file
    name: the longest such key runs every stage; one byte more is refused, with why."""
    from prox_dagster import definitions
    from prox_dagster.sample import write_sample_crawl

    write_sample_crawl(tmp_path, n_shards=1, docs_per_shard=4)
    raw = tmp_path / "raw"
    source = next(raw.iterdir())
    longest = "k" * shards_module.MAX_KEY_BYTES
    source.rename(raw / f"{longest}.jsonl.gz")
    (raw / ("x" * (shards_module.MAX_KEY_BYTES + 1) + ".jsonl")).write_text(
        json.dumps({"text": "a page"}) + "\n")
    files, refused = list_raw_shards(str(raw))
    assert list(files) == [longest]
    (reason,) = refused.values()
    assert f"is {shards_module.MAX_KEY_BYTES + 1} bytes" in reason and "rename" in reason
    defs = definitions.build_definitions(data_dir=tmp_path)
    assert definitions.register_new_shards(defs, instance) == [longest]
    assert definitions.materialize_shard(defs, instance, longest).success
    assert (tmp_path / "tokenized_shard" / f"{longest}.provenance.json").is_file()


def test_a_damaged_parquet_row_group_costs_its_rows_and_the_others_are_read(tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "damaged.parquet"
    pl.DataFrame({"id": [f"r{i}" for i in range(30)],
                  "text": [f"page {i} " + "words " * 50 for i in range(30)]}).write_parquet(
        path, row_group_size=10, compression="zstd")
    chunk = pq.ParquetFile(path).metadata.row_group(1).column(1)  # the middle group's text
    data = bytearray(path.read_bytes())
    start = chunk.data_page_offset + 16
    data[start:start + 64] = bytes(range(64))
    path.write_bytes(bytes(data))
    shard = read_raw_shard(path)
    assert shard.documents["id"].to_list() == [f"r{i}" for i in (*range(10), *range(20, 30))]
    [row] = shard.quarantine.iter_rows(named=True)
    assert row["reason"].startswith("damaged Parquet row group 1: rows 10 to 19 cannot be read")


def test_a_huge_number_or_a_deep_nesting_costs_its_record(tmp_path):
    path = tmp_path / "numbers.jsonl"
    path.write_text('{"text": "first page"}\n'
                    '{"text": "big", "n": ' + "9" * 5000 + "}\n"
                    '{"text": "deep", "d": ' + "[" * 100_000 + "]" * 100_000 + "}\n"
                    '{"text": "last page"}\n')
    shard = read_raw_shard(path)
    assert shard.documents["text"].to_list() == ["first page", "last page"]
    reasons = shard.quarantine["reason"].to_list()
    assert len(reasons) == 2 and all(r.startswith("invalid JSON: ") for r in reasons)
    assert "4300 digits" in reasons[0]


def test_labelled_sets_and_model_files_are_read_only_when_regular(tmp_path):
    """The paths a user or a folder names are held to the raw folder's rule: a FIFO (which
    would stall the step) or a device is refused by name, and a set folder's file may link only
    within the folder."""
    from prox_dagster import cli
    from prox_dagster.evaluation import EvaluationError, load_labelled_set
    from prox_dagster.refiners.classifier import ClassifierModel, ClassifierModelError

    secret = tmp_path / "secret.jsonl"
    secret.write_text(json.dumps({"text": "CANARY-91c2", "line_labels": "K"}) + "\n")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "docs.jsonl").symlink_to(secret)
    with pytest.raises(EvaluationError, match="outside .*nothing of it was read"):
        load_labelled_set(linked)
    inner = tmp_path / "inner"
    inner.mkdir()
    (inner / "real.jsonl").write_text(secret.read_text())
    (inner / "docs.jsonl").symlink_to(inner / "real.jsonl")  # a link within the folder
    assert load_labelled_set(inner).documents[0].text == "CANARY-91c2"
    os.mkfifo(tmp_path / "pipe.jsonl")
    started = time.perf_counter()
    with pytest.raises(EvaluationError, match="is a FIFO"):
        load_labelled_set(tmp_path / "pipe.jsonl")
    with pytest.raises(ClassifierModelError, match="is a FIFO"):
        ClassifierModel(tmp_path / "pipe.jsonl")
    with pytest.raises(ClassifierModelError, match="is a device"):
        ClassifierModel("/dev/zero")
    assert time.perf_counter() - started < 5  # refused, not read nor waited on
    not_a_folder = tmp_path / "data"
    not_a_folder.write_text("")
    assert cli.main(["demo", "--data-dir", str(not_a_folder),
                     "--dagster-home", str(tmp_path / "home")]) == 2


@pytest.fixture
def full_disk(tmp_path):
    """A 256 KiB tmpfs: the data folder of a store that runs out of space."""
    mount = tmp_path / "full"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_stage_that_runs_out_of_space_fails_by_name_and_leaves_no_temporaries(
        tmp_path, full_disk, instance):
    from prox_dagster import definitions
    from prox_dagster.sample import write_sample_crawl

    write_sample_crawl(tmp_path / "crawl", n_shards=1, docs_per_shard=400)
    defs = definitions.build_definitions(data_dir=full_disk, raw_dir=tmp_path / "crawl" / "raw")
    (shard,) = definitions.register_new_shards(defs, instance)
    result = definitions.materialize_shard(defs, instance, shard)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "No space left on device" in failure.step_failure_data.error.to_string()
    left = [p.relative_to(full_disk).as_posix() for p in full_disk.rglob("*")
            if p.is_file() and (p.name.endswith(".tmp") or ".staging" in p.parts)]
    assert left == [], left
    # what was published before the disk filled is whole: every sidecar's files are there
    for sidecar in full_disk.rglob("*.provenance.json"):
        record = json.loads(sidecar.read_text())
        for entry in record["files"]:
            assert (sidecar.parent / entry["name"]).stat().st_size == entry["bytes"]
