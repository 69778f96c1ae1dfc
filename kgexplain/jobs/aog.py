"""``kgexplain aog learn`` and ``kgexplain localize`` as library calls: :func:`run_learn` learns a part's And-Or
graph from K annotated examples on a stored build; :func:`run_localize` finds the part on new images."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from kgexplain.aog.model import AOGConfig, PartModel
from kgexplain.aog.overlay import overlay
from kgexplain.aog.run import Detector, LoadedBuild, frame, learn_on, localise_source, pick_examples
from kgexplain.aog.vote import axis_names, held_by_prior
from kgexplain.data.base import Framing, ImageSource
from kgexplain.data.spec import DataSpec
from kgexplain.data.subset import Subset
from kgexplain.data.synth import BACKGROUND
from kgexplain.errors import DataError, ModelError, StoreError, UsageError
from kgexplain.explanatory_graph import EGConfig, ExplanatoryGraph, ExplanatoryGraphMiner
from kgexplain.jobs.common import JobResult, data_label, device_name, opened, usable_images
from kgexplain.models.registry import ModelHandle, checkpoint_file, load_model
from kgexplain.persist.aog import aog_run_id, learnt_parts, part_record, part_rows, read_part
from kgexplain.persist.shared import image_rows, metric_rows, write_shared
from kgexplain.plots import save_png
from kgexplain.progress import Progress, say
from kgexplain.store import GraphStore, StoreSpec, queries
from kgexplain.store import ids as I
from kgexplain.store.base import RunRecord, now
from kgexplain.workspace import output_folder


def open_build(
    store: GraphStore, run: str | None = None, device: str = "cpu", model: ModelHandle | None = None
) -> LoadedBuild:
    """A stored explanatory-graph build (default: the newest complete one) with its model and mined graph loaded.
    A build of a network given from Python (``ModelHandle.from_module``) needs that handle again as ``model``."""
    if run is None:
        run = queries.latest_build(store)
    row = queries.run(store, run)
    if row is None:
        raise UsageError(f"no run {run!r} in {store.url}", hint="`kgexplain runs` lists them")
    if row["kind"] != "eg" or row["status"] != "complete":
        raise UsageError(f"run {run!r} is not a complete explanatory-graph build", hint="`kgexplain runs` lists them")
    config = json.loads(row["config"] or "{}")
    stats = json.loads(row["stats"] or "{}")
    ref = stats.get("graph")
    load = config.get("load")
    if not ref or not load:
        raise StoreError(
            f"run {run!r} was built by an older kgexplain without its graph file", hint="run `kgexplain build` again"
        )
    path = store.artifacts.path(ref["path"])
    if not path.exists():
        raise StoreError(f"the graph file of run {run!r} is missing: {path}", hint="run `kgexplain build` again")
    if model is None and load.get("python"):
        raise UsageError(
            f"run {run!r} was mined with a network given from Python ({load['model']})",
            hint="pass the same ModelHandle again: LearnConfig(model=...) / LocalizeConfig(model=...)",
        )
    checkpoint = checkpoint_file(load.get("weights"))
    if model is None and checkpoint is not None and not checkpoint.is_file():
        raise ModelError(
            f"run {run!r} was mined with the checkpoint {load['weights']}, which is no longer there",
            hint="put the file back at that path, or rebuild with `kgexplain build --weights NEW_PATH`",
        )
    handle = model if model is not None else load_model(load["model"], load["weights"])
    if handle.identity != config.get("model"):
        if model is not None:
            raise UsageError(
                f"the model given ({handle.name}) is not the network and weights run {run!r} was mined with "
                f"({load['model']})",
                hint="pass the network and weights the build used, or none for a build of a named model",
            )
        raise UsageError(
            f"the weights of {load['model']} changed since run {run!r} was built",
            hint="rebuild with `kgexplain build`, or restore the checkpoint it used",
        )
    graph = ExplanatoryGraph.load(path)
    eg = EGConfig.from_dict(graph.config or config.get("config", {}))
    framing = Framing(int(config["input_size"]), Framing.described_crop(config.get("framing")) or "none")
    miner = ExplanatoryGraphMiner(eg, device=device)
    detector = Detector(handle, graph, miner, device)
    return LoadedBuild(run, str(row["model"]), config, handle, graph, framing, detector)


def _synthetic(store: GraphStore, build: LoadedBuild) -> ImageSource | None:
    """The synthetic workload a build mined (its objects and background images), or None for user data."""
    synth = build.config.get("synthetic")
    if not synth:
        return None
    spec = DataSpec(n=2 * int(synth["n"]), seed=int(synth["seed"]), categories=(synth["category"], BACKGROUND))
    return spec.open(store.workspace)


def build_negatives(store: GraphStore, build: LoadedBuild) -> ImageSource | None:
    """The background images the build mined against (the synthetic workload, or its --negatives folder)."""
    synth = _synthetic(store, build)
    if synth is not None:
        return Subset.by_label(synth, [BACKGROUND])
    spec = build.config.get("negatives_source")
    if not isinstance(spec, dict):
        return None  # none given (or a build by an older kgexplain, which kept only their fingerprint)
    try:
        return DataSpec.from_record(spec).open(store.workspace)
    except DataError as e:
        raise DataError(
            f"the background images of build {build.run} cannot be read: {e.message}",
            hint="restore them where the build read them, or rebuild with --negatives",
        ) from e


def build_images(store: GraphStore, build: LoadedBuild, progress: Progress | None = None) -> ImageSource | None:
    """The images the build mined: the synthetic workload, or the user's data set where the build recorded it
    (builds by an older kgexplain did not) and it can still be read (else None, with a note)."""
    synth = _synthetic(store, build)
    if synth is not None:
        return Subset.by_label(synth, [build.config["synthetic"]["category"]])
    spec = build.config.get("data_source")
    if not isinstance(spec, dict):
        return None
    try:
        return DataSpec.from_record(spec).open(store.workspace)
    except DataError as e:
        say(progress, f"note: the images of build {build.run} cannot be read ({e.message}); not using them")
        return None


@dataclass(frozen=True)
class LearnConfig:
    """Which part to learn, from which examples, on which build.

    ``examples`` is an annotations JSON or CUB (the first ``k`` images with the part annotated, or ``k`` drawn with
    ``seed``); without it, a build on the reference workload uses its own synthetic ground truth. The templates grow
    on ``unlabelled`` images (default: the build's images, or the examples' other images).
    """

    part: str
    examples: DataSpec | None = None
    k: int = 3
    seed: int | None = None
    category: str | None = None  # default: the examples' label
    run: str | None = None  # the build (default: the newest)
    unlabelled: DataSpec | None = None
    device: str = "auto"
    aog: AOGConfig | None = None
    model: ModelHandle | None = None  # the network of a build mined from Python (ModelHandle.from_module)


FACING_FROM = {
    "placement": "where each example's template and its mirror place the part on the other examples",
    "given": "another part of the category's (this part's templates did not separate them)",
    "cosine": "the cosine of their pattern strengths (neither placement nor another part separated them)",
}


def _px(v: float) -> str:
    """A shift in pixels to one decimal, without a sign on zero."""
    return f"{v:.1f}" if abs(v) >= 0.05 else "0.0"


@dataclass
class LearnResult(JobResult):
    part: PartModel
    run: str
    build: str
    examples: list[str]
    unlabelled: int
    seconds: float
    counts: dict[str, int] = field(default_factory=dict)
    uncalibrated: str | None = None  # why "not found" is not calibrated (None: it is)
    aligned_to: str | None = None  # the part of the category whose facings this one's were aligned with
    aligned_by: str | None = None  # through "a shared example", or by "localising it on the examples"

    def to_json(self) -> Any:
        return {
            "run": self.run,
            "build": self.build,
            "part": self.part.name,
            "category": self.part.category,
            "templates": len(self.part.templates),
            "patterns_used": self.counts["uses"],
            "examples": self.examples,
            "unlabelled_images": self.unlabelled,
            "calibration": self.part.calibration or None,
            "not_calibrated_because": None if self.part.calibration else self.uncalibrated,
            "from_prior": axis_names(held_by_prior(self.part)),
            "facing_from": self.part.facing_from,
            "facing_aligned_to": self.aligned_to,
            "facing_aligned_by": self.aligned_by,
            "dropped_templates": self.part.dropped,
            "vote_shift": self.part.prior.get("vote_shift"),
            "seconds": round(self.seconds, 1),
        }

    def text(self) -> str:
        r = self.to_json()
        lines = [
            f"learnt '{r['part']}' ({r['category']}) on {self.build}: {r['templates']} templates, "
            f"{r['patterns_used']} pattern uses, from {', '.join(self.examples)} "
            f"(+{self.unlabelled} unlabelled) in {r['seconds']} s; stored as run {self.run}"
        ]
        if r["facing_from"] in FACING_FROM:
            lines.append(f"examples' facings: {FACING_FROM[r['facing_from']]}")
        if self.aligned_to and self.aligned_by != "a shared example":
            lines.append(
                f"facings aligned with '{self.aligned_to}' by {self.aligned_by} (the two parts share no example)"
            )
        if r["dropped_templates"]:
            limit = self.part.config.template_error * self.part.size
            which = ", ".join(
                f"{d['example']}{' (mirrored)' if d['mirrored'] else ''} {d['error_px']} px"
                for d in r["dropped_templates"]
            )
            lines.append(f"dropped templates that placed the other examples' part over {limit:.1f} px off: {which}")
        if r["from_prior"]:
            lines.append(
                f"position: {' and '.join(r['from_prior'])} from the part's place in the object box on images cropped "
                "to a given box (its votes placed the examples worse, each left out in turn)"
            )
        shift = (r["vote_shift"] or {}).get("shift") or [0.0, 0.0]
        if any(shift):
            lines.append(
                f"votes moved by ({_px(shift[0])}, {_px(shift[1])}) px in the object frame (x mirrored with the "
                "facing): on the unlabelled images they landed off the examples' mean, and the examples, each placed "
                "by the others' templates, erred the same way"
            )
        c = self.part.calibration
        if not c:
            why = self.uncalibrated or "no background images"
            return "\n".join([*lines, f"not calibrated ({why}): every detection is reported found"])
        lines.append(
            f"'not found' below presence {c['threshold']:.3f} (precision {c['precision']} at even odds; on the "
            f"calibration images: found {c['found_rate']:.0%} of {c['positives']} with the part, "
            f"{c['false_rate']:.0%} of {c['negatives']} background)"
        )
        if e := c.get("localisation"):
            lines.append(
                f"held-out localisation error: {e['distance']:.3f} of the image diagonal on {e['images']} annotated "
                f"images ({e['found']} reported found)"
            )
        return "\n".join(lines)


def run_learn(
    config: LearnConfig, store: GraphStore | StoreSpec | None = None, progress: Progress | None = None
) -> LearnResult:
    """Learn ``config.part`` from K annotated examples and store it as its own run (re-learning replaces it):
    Part -> HAS_TEMPLATE -> Template -> USES -> Pattern.

    Example::

        from kgexplain import LearnConfig, StoreSpec, run_learn

        learnt = run_learn(LearnConfig(part="head"), StoreSpec("my-store"))
        print(learnt.run, len(learnt.part.templates))
    """
    t0, started = time.perf_counter(), now()
    cfg = config
    examples = cfg.examples.open() if cfg.examples is not None else None
    unlabelled = cfg.unlabelled.open() if cfg.unlabelled is not None else None
    device = device_name(cfg.device)
    with opened(store or StoreSpec(), write=True, progress=progress) as db:
        build = open_build(db, cfg.run, device, cfg.model)
        own = build_images(db, build, progress)
        seed = cfg.seed
        if examples is None:
            if own is None:
                raise UsageError(
                    "this build's images carry no annotations", hint="pass --examples FILE (annotations JSON)"
                )
            examples = own
            seed = 0 if seed is None else seed
        chosen = pick_examples(examples, cfg.part, cfg.k, seed)
        has_boxes = all(examples.record(i).box is not None for i in chosen)
        framing = build.framing_for(has_boxes)
        ex = frame(examples, chosen, framing)
        centres = np.array([f[cfg.part] for f in ex.keypoints], np.float64)
        cat = (
            cfg.category
            or examples.record(chosen[0]).label
            or (build.config.get("synthetic") or {}).get("category")
            or "object"
        )
        pool = unlabelled if unlabelled is not None else (own if own is not None else examples)
        others = []
        for name in learnt_parts(db, build.run, cat):
            if name != cfg.part:
                try:
                    others.append(read_part(db, build.run, build.graph, name, cat))
                except UsageError:  # learnt by an older kgexplain: it cannot share facings
                    continue
        say(progress, f"learning '{cfg.part}' ({cat}) from {cfg.k} examples on {len(pool)} unlabelled images")
        if (build.config.get("facing") or {}).get("mode") == "latent":
            say(
                progress,
                f"note: {build.run} was mined with --facing latent; parts localise worse on such a graph today "
                "(README: Explanatory graphs, the facing as a latent variable)",
            )
        learnt = learn_on(build, cfg.part, cat, ex, centres, pool, cfg.aog, build_negatives(db, build), others)
        model, aligned, grow = learnt.part, learnt.aligned_to, learnt.grown
        run_id = aog_run_id(build.run, cat, cfg.part)
        nodes, rels = part_rows(build.run, build.graph, model, run_id)
        owner = queries.part_owner(db, str(nodes["Part"].column("id")[0]))
        if owner is not None and owner != run_id:  # learnt before under another id (an older kgexplain's): replaced
            db.delete_run(owner)
        counts = {"parts": 1, "templates": len(nodes["Template"]), "uses": len(rels["USES"])}
        extra = {"k": cfg.k, "seed": seed, "examples": ex.ids, "source": examples.name, "facing_aligned_to": aligned}
        extra["facing_aligned_by"] = learnt.aligned_by or None
        extra["not_calibrated_because"] = None if model.calibration else learnt.uncalibrated
        stats = {"templates": counts["templates"], "uses": counts["uses"]}
        record = part_record(run_id, build.run, build.model_id, model, examples.name, extra, stats, build.graph)
        db.write_run(replace(record, started=started), nodes, rels)
    seconds = time.perf_counter() - t0
    return LearnResult(
        model, run_id, build.run, ex.ids, grow, seconds, counts, learnt.uncalibrated, aligned, learnt.aligned_by or None
    )


@dataclass(frozen=True)
class LocalizeConfig:
    """Which part(s) to find on which images. ``part`` is one name or several, comma-separated. ``images`` are
    image files (whole images: the object is found first), or an annotations JSON (or any other source) whose
    object boxes crop the images as the build's did. Every part learnt for the category on the build helps decide
    each object's facing, which all its parts share."""

    part: str
    images: DataSpec
    category: str | None = None  # when the part is learnt for several categories
    run: str | None = None  # the build (default: the newest)
    out: str | None = None  # write an overlay PNG per image and part here
    device: str = "auto"
    whole: bool | None = None  # None: crop to the images' boxes when they have them, else search the whole image
    record: bool = False  # store the localisations as a run (kind "localize") for the browser's image pages
    model: ModelHandle | None = None  # the network of a build mined from Python (ModelHandle.from_module)

    @property
    def parts(self) -> list[str]:
        names = [p.strip() for p in self.part.split(",") if p.strip()]
        if not names:
            raise UsageError("name a part (--part head, or several: --part head,tail)")
        return list(dict.fromkeys(names))


LOCALIZE_COLUMNS = ["image", "part", "found", "confidence", "x", "y", "box", "score", "template", "flipped"]


@dataclass
class LocalizeResult(JobResult):
    part: str
    run: str  # the build
    recorded: str | None  # the localize run written with ``record``
    results: list[dict[str, Any]]  # per image and part: position, box, score, confidence, ... in the image's pixels
    timings: dict[str, float]
    overlays: bool = False

    def to_json(self) -> Any:
        out = {"part": self.part, "run": self.run, "results": self.results}
        return out | {"recorded": self.recorded} if self.recorded else out

    def rows(self) -> list[dict[str, Any]]:
        return self.results

    def columns(self) -> list[str]:
        held = ["from_prior"] if any(r.get("from_prior") for r in self.results) else []  # only on given boxes
        return LOCALIZE_COLUMNS + held + ["object_box"] + (["overlay"] if self.overlays else [])


def run_localize(
    config: LocalizeConfig, store: GraphStore | StoreSpec | None = None, progress: Progress | None = None
) -> LocalizeResult:
    """Find ``config.part`` on every image: found or not, confidence, position, box, score, template and facing,
    in the images' own pixels.

    Example::

        from kgexplain import DataSpec, LocalizeConfig, StoreSpec, run_localize

        found = run_localize(LocalizeConfig("head", DataSpec(files=("bird.png",))), StoreSpec("my-store"))
        print(found.results[0]["found"], found.results[0]["x"], found.results[0]["y"])
    """
    cfg, started = config, now()
    if cfg.images.synthetic:
        raise UsageError("give image files, a folder or --annotations FILE (one of them)")
    wanted = cfg.parts
    source = cfg.images.open()
    device = device_name(cfg.device)
    with opened(store or StoreSpec(), write=False) as db:
        db.check_schema()
        build = open_build(db, cfg.run, device, cfg.model)
        models = [read_part(db, build.run, build.graph, p, cfg.category) for p in wanted]
        cat = models[0].category
        helpers = [
            read_part(db, build.run, build.graph, p, cat) for p in learnt_parts(db, build.run, cat) if p not in wanted
        ]
    # Decode everything first: an unreadable image named on its own fails before anything is written; in a folder
    # or an annotations file it is skipped and counted, as in every job.
    source = usable_images(cfg.images, source, progress)
    if cfg.whole and build.framing.crop != "box":
        say(
            progress,
            f"note: {build.run} was mined on whole images (not cropped to object boxes), so every image is "
            "localised whole, as the build saw its images, and --whole changes nothing; a build on images "
            "cropped to their boxes (--annotations FILE --crop box, or --cub) is what finds an object in a larger "
            "image",
        )
    out_dir = output_folder(cfg.out) if cfg.out else None  # before the work: a folder that cannot be made stops it
    found, timings = localise_source(build, models + helpers, source, progress=progress, whole=cfg.whole)
    rows = []
    for i in range(len(source)):
        for name in wanted:
            f = found[name][i]
            row = {"image": f.image, **f.result}
            if out_dir is not None:
                path = out_dir / f"{i:05d}-{Path(f.image).stem}-{name}.png"
                needed = models[wanted.index(name)].config.precision
                save_png(overlay(source.load_image(i), f.result, f.loc.voters, f.affine, needed), path)
                row["overlay"] = str(path)
            rows.append(row)
    say(
        progress,
        f"{len(source)} images in {sum(timings.values()):.2f} s "
        f"({', '.join(f'{k} {v:.2f}' for k, v in timings.items())})",
    )
    recorded = None
    if cfg.record:
        with opened(store or StoreSpec(), write=True, progress=progress) as db:
            recorded = _record(db, build, source, wanted, rows, cfg, started)
        say(progress, f"stored run {recorded}: {len(rows)} localisations (image pages of `kgexplain serve` show them)")
    return LocalizeResult(cfg.part, build.run, recorded, rows, timings, out_dir is not None)


def _record(
    store: GraphStore,
    build: LoadedBuild,
    source: ImageSource,
    parts: Sequence[str],
    rows: Sequence[dict[str, Any]],
    cfg: LocalizeConfig,
    started: str | None = None,
) -> str:
    """Store localisations as one run: a Metric per image and part (kind ``localization``, its value the
    confidence, the rest in ``extra``) on the image's node."""
    image_ids, image_table = image_rows(source, range(len(source)), source.name, store.artifacts.root)
    determinants = {"build": build.run, "parts": list(parts), "data": source.fingerprint(), "whole": cfg.whole}
    run = I.run_id("localize", build.handle.name, data_label(source.name), determinants)
    per_image = len(parts)
    metrics = []
    for j, row in enumerate(rows):
        image_id = image_ids[j // per_image]
        extra = {k: v for k, v in row.items() if k not in ("image", "overlay")}
        metrics.append(
            {
                "id": f"{row['part']}/{j // per_image}", "kind": "localization", "name": row["part"],
                "value": row.get("confidence"), "image": image_id, "image_id": image_id, "extra": extra,
            }
        )  # fmt: skip
    nodes, rels = metric_rows(run, metrics)
    write_shared(store, {"Image": image_table}, {})
    config = {**determinants, "category": cfg.category}
    stats = {"images": len(source), "found": sum(bool(r.get("found")) for r in rows), "localisations": len(rows)}
    store.write_run(RunRecord(run, "localize", build.model_id, source.name, config, stats, started), nodes, rels)
    return run
