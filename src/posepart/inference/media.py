"""`posepart predict`: run a `Predictor` over images, folders, video files and webcams, and write what it finds.

OUT/keypoints.json          COCO keypoint results of every still image (image ids: OUT/summary.json "images", or
                            the ids of --annotations when a file name matches)
OUT/parts/<name>.png        part labels, indexed PNG (values = part class of summary.json's "schema", VOC palette)
OUT/instances/<name>.png    part instances, indexed PNG (0 = none, i = the image's i-th person in keypoints.json)
OUT/overlays/<name>.jpg     image + translucent part colours + skeletons
OUT/maps/<name>_heatmaps.jpg, <name>_pafs.jpg   with --maps
OUT/videos/<name>.mp4       a video or webcam input with the overlay drawn on every frame (mp4v; not with
                            --no-overlays), and
OUT/videos/<name>.json      its COCO results, image_id = frame index
OUT/summary.json            counts, every image's id/size/people, every failed input with the reason, the model's
                            schema (joints, skeleton, part classes: COCO's category form) and the settings

A run into an --out that holds an earlier run replaces it (the files its summary.json lists go first); an --out that
holds a dataset is refused. A bad input (missing, unreadable, truncated, zero-size, not an image) is reported and
skipped; the rest is processed.
Ctrl-C (KeyboardInterrupt) stops the run but still writes keypoints.json and summary.json ("interrupted": true) for
the inputs done; on a webcam it only ends that stream (the way to stop one).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections import deque
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from posepart.data.format import ANNOTATIONS_FILE, IMAGES_DIR
from posepart.data.images import exif_orientation
from posepart.errors import OutputError, output_folder, writing
from posepart.files import JsonArrayWriter, remove_orphans, utf8, write_json_atomic
from posepart.inference.draw import draw_heatmaps, draw_pafs, draw_result, save_instances, save_parts
from posepart.inference.inputs import AnnotationIndex, Source
from posepart.inference.outputs import (METRICS_FILE, OUTPUTS, RESULTS_FILE, SUMMARY_FILE, earlier_names,
                                        replace_earlier_run)
from posepart.inference.predictor import ImageResult, Predictor
from posepart.inference.preprocess import InputError, bgr_to_rgb, load_image
from posepart.viz import save_rgb

DEFAULT_FPS = 25.0


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the run is (`posepart predict` installs the handler): it stops the run as Ctrl-C does,
    webcams included, which Ctrl-C only ends one by one."""


@contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends, then act as they would have: what it writes is written whole
    and listed. By handlers that note the signal, not by a signal mask: a mask holds a signal from the calling
    thread alone, and the process's other threads (torch's, ONNX Runtime's) would take it. Outside the main thread,
    which alone runs handlers, the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {signum: signal.signal(signum, lambda signum, frame: pending.append(signum))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)  # None: a handler set from C
        if pending:
            signal.raise_signal(pending[0])  # its own handler now: an interrupt, Terminated, or the default


@dataclass
class PredictOptions:
    """What `run_predict` writes (see the module docstring)."""

    out: Path
    overlays: bool = True
    parts: bool = True
    instances: bool = True
    maps: bool = False
    max_frames: int | None = None
    annotations: AnnotationIndex | None = None  # --annotations: the COCO image ids of the inputs it lists
    progress: bool = True
    model: str | None = None  # the model file, as given: recorded in summary.json with the Predictor's settings


class _Run:
    """Counts and failures of one `run_predict` call; writes the per-image files and streams the still images' COCO
    results into keypoints.json (`results`, when the run has still images)."""

    def __init__(self, predictor: Predictor, options: PredictOptions, results: JsonArrayWriter | None) -> None:
        self.predictor, self.options = predictor, options
        self.schema = predictor.schema
        self.out = options.out
        self.results = results
        self.people = 0  # in still images
        self.images: list[dict[str, Any]] = []
        self.videos: list[dict[str, Any]] = []
        self.failures: list[dict[str, str]] = []
        self.next_id = 1 + max(options.annotations.ids.values(), default=0) if options.annotations else 1
        self.unlisted = 0  # images not in --annotations: the first is named, the others counted at the end

    def path(self, output: str, source: Source) -> Path:
        """Where the `OUTPUTS` entry `output` of `source` goes; a link already there is removed, not written through
        (OpenCV's writers follow links)."""
        path = self.out / OUTPUTS[output].format(source.name)
        if path.is_symlink():
            path.unlink()
        return path

    def too_long(self, source: Source) -> str | None:
        """Why `source`'s output file names do not fit the file system (more bytes than a name may have), else None.
        Checked before the input is read, so that it fails alone and leaves no files: before, one 245-character name
        under --maps (`_heatmaps.jpg` adds 13) stopped the whole run without keypoints.json."""
        o = self.options
        if source.kind == "image":
            kinds = [kind for kind, on in (("parts", o.parts), ("instances", o.instances), ("overlay", o.overlays),
                                           ("heatmaps", o.maps), ("pafs", o.maps)) if on]
        else:  # a video or a webcam
            kinds = ["frames", *(["video"] if o.overlays else [])]
        names = [Path(OUTPUTS[kind].format(source.name)).name for kind in kinds]
        longest = max(names, key=lambda name: len(os.fsencode(name)), default="")
        try:
            limit = os.pathconf(self.out, "PC_NAME_MAX")
        except (OSError, ValueError, AttributeError):  # no such query (Windows): the common limit
            limit = 255
        if len(os.fsencode(longest)) <= limit:
            return None
        return (f"{source.location}: its output file {longest!r} would be a name longer than the file system takes "
                f"({limit} bytes): rename the input")

    def fail(self, location: str | int, error: str) -> None:
        self.failures.append({"input": str(location), "error": error})
        tqdm.write(f"skipped: {error}", file=sys.stderr)

    def image_id(self, source: Source) -> int:
        """Its id in --annotations when listed there, else the next id after all of theirs."""
        known, alike = self.options.annotations.image_id(str(source.location)) if self.options.annotations else (
            None, [])
        if known is not None:
            orientation = exif_orientation(Path(source.location))
            if orientation != 1:  # a dataset's annotations refer to the stored pixels (as `posepart evaluate` reads)
                tqdm.write(f"warning: {source.location} is tagged with EXIF orientation {orientation}: its results are "
                           f"in the upright image's coordinates, which --annotations {self.options.annotations.path} "
                           f"likely does not use", file=sys.stderr)
            return known
        self.next_id += 1
        if alike:
            tqdm.write(f"warning: {source.location}: {len(alike)} images of --annotations are named "
                       f"{Path(alike[0]).name} ({', '.join(alike[:3])}{', ...' if len(alike) > 3 else ''}), so its "
                       f"results get a new id, {self.next_id - 1}: pass it by the path the annotations use",
                       file=sys.stderr)
        elif self.options.annotations:  # before: a new id without a word, and keypoints.json no longer scored
            self.unlisted += 1
            if self.unlisted == 1:  # (then one line per such image: 29 for a folder beside a split's file)
                tqdm.write(f"warning: {source.location} is not listed in --annotations "
                           f"{self.options.annotations.path}: its results get a new id, {self.next_id - 1}, which "
                           f"that file cannot score", file=sys.stderr)
        return self.next_id - 1

    def note_unlisted(self) -> None:
        """After the run: how many images beyond the first named were not in --annotations either."""
        if self.unlisted > 1:
            more = self.unlisted - 1
            tqdm.write(f"warning: {more} more {'image is' if more == 1 else 'images are'} not listed in "
                       f"--annotations {self.options.annotations.path}: their results get new ids too",
                       file=sys.stderr)

    def write_image(self, source: Source, image: np.ndarray, result: ImageResult) -> None:
        """Its files first, then its entries: an image listed in keypoints.json / summary.json has all its files,
        even when Ctrl-C lands in the middle."""
        opts, stride = self.options, self.predictor.info.stride
        image_id = self.image_id(source)
        if opts.parts and result.parts is not None:
            save_parts(self.path("parts", source), result.parts, self.schema)
        if opts.instances and result.instances is not None:
            save_instances(self.path("instances", source), result.instances)
        if opts.overlays:
            save_rgb(self.path("overlay", source), draw_result(image, result, self.schema))
        if opts.maps and result.maps is not None:
            if result.maps.heatmaps is not None:
                save_rgb(self.path("heatmaps", source), draw_heatmaps(image, result, self.schema, stride))
            if result.maps.pafs is not None:
                save_rgb(self.path("pafs", source), draw_pafs(image, result, self.schema, stride))
        assert self.results is not None, "a run of still images streams their results"
        # in the people's category of --annotations (Label Studio's, CVAT's need not be 1): COCO tools score it
        self.results.extend(result.coco(image_id, opts.annotations.category_id if opts.annotations else 1))
        self.people += len(result.people)
        self.images.append({"id": image_id, "file": str(source.location), "name": source.name,
                            "width": result.width, "height": result.height, "people": len(result.people)})

    def summary(self) -> dict[str, Any]:
        return {"succeeded": len(self.images) + len(self.videos), "failed": len(self.failures),
                "people": self.people + sum(video["people"] for video in self.videos), "images": self.images,
                "videos": self.videos,
                "failures": self.failures,
                "model": self.options.model, "settings": self.predictor.settings(),  # what made these results
                # what the results are in: their joints, limbs and the part classes of parts/*.png (before, unsaid:
                # a model of one's own classes' label maps could not be read without the model)
                "schema": self.predictor.schema.to_category()}


def _images(run: _Run, sources: list[Source]) -> None:
    """Still images through predictor.stream (batched); a file that cannot be read is reported and skipped."""
    pending: deque[tuple[Source, np.ndarray]] = deque()
    bar = tqdm(total=len(sources), desc="images", unit="img", disable=not run.options.progress or len(sources) < 2)

    def loaded() -> Iterator[np.ndarray]:
        for source in sources:
            too_long = run.too_long(source)
            if too_long is not None:
                run.fail(source.location, too_long)
                bar.update(1)
                continue
            try:
                image = load_image(source.location)
            except InputError as err:
                run.fail(source.location, str(err))
                bar.update(1)
                continue
            pending.append((source, image))
            yield image

    try:
        for result in run.predictor.stream(loaded()):
            source, image = pending.popleft()
            if result.error is not None:
                run.fail(source.location, result.error)
            else:
                run.write_image(source, image, result)
            bar.update(1)
    finally:
        bar.close()


def _frames(capture: Any, limit: int | None) -> Iterator[np.ndarray]:
    """RGB frames until the stream ends or `limit` frames."""
    count = 0
    while limit is None or count < limit:
        ok, frame = capture.read()
        if not ok or frame is None or frame.size == 0:
            return
        count += 1
        yield bgr_to_rgb(frame)


def _video(run: _Run, source: Source) -> None:
    """A video file or webcam -> OUT/videos/<name>.mp4 (overlays; not with --no-overlays) and <name>.json (COCO
    results per frame, streamed to the file as the frames come: an hour of video held 400 MB of them in memory)."""
    what = f"webcam {source.location}" if source.kind == "webcam" else str(source.location)
    too_long = run.too_long(source)
    if too_long is not None:
        run.fail(source.location, too_long)
        return
    if isinstance(source.location, str) and not utf8(source.location):
        run.fail(source.location, f"{what!r}: its name is not UTF-8 text, which OpenCV's video reader cannot open "
                                  f"(it crashed the process): rename the file")
        return
    capture = cv2.VideoCapture(source.location)
    if not capture.isOpened():
        capture.release()
        run.fail(source.location, f"{what}: cannot open as a video" + (" (no such camera?)" if source.kind ==
                                                                          "webcam" else ""))
        return
    fps = capture.get(cv2.CAP_PROP_FPS) or DEFAULT_FPS
    total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT) or 0) or None
    if run.options.max_frames is not None:
        total = min(total or run.options.max_frames, run.options.max_frames)
    video_path, writer = run.path("video", source), None
    with writing(video_path.parent):
        video_path.parent.mkdir(parents=True, exist_ok=True)
    frames, people, broken, why = 0, 0, 0, ""  # broken: frames whose maps held NaN or inf (why: the first's error)
    frame_queue: deque[np.ndarray] = deque()

    def feed() -> Iterator[np.ndarray]:
        for frame in _frames(capture, run.options.max_frames):
            frame_queue.append(frame)
            yield frame

    bar = tqdm(total=total, desc=source.name, unit="frame", disable=not run.options.progress)
    results = JsonArrayWriter(run.path("frames", source))
    try:
        for result in run.predictor.stream(feed()):
            frame = frame_queue.popleft()
            if writer is None and run.options.overlays:
                writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"mp4v"), fps,
                                         (frame.shape[1], frame.shape[0]))
                if not writer.isOpened():
                    raise OutputError(f"cannot write {video_path}: OpenCV cannot write mp4v video there")
            results.extend(result.coco(frames))
            people += len(result.people)
            if result.error is not None:  # before: written with nobody on it, without a word
                broken, why = broken + 1, why or result.error
            if writer is not None:
                writer.write(cv2.cvtColor(draw_result(frame, result, run.schema), cv2.COLOR_RGB2BGR))
            frames += 1
            bar.update(1)
    except KeyboardInterrupt as err:  # a webcam runs until Ctrl-C; a video file, or SIGTERM: the run stops after
        tqdm.write("interrupted: closing the video", file=sys.stderr)  # this one is closed
        terminated = isinstance(err, Terminated)
        stop = source.kind != "webcam" or terminated
    except BaseException:
        results.discard()
        raise
    else:
        stop = terminated = False
    finally:
        with signals_held():  # a second interrupt waits: the video is closed and listed with its results
            bar.close()
            capture.release()
            if writer is not None:
                writer.release()
            if not frames:
                results.discard()
                run.fail(source.location, f"{what}: no readable frames")
            elif results.file is not None:  # (an exception other than an interrupt discarded them above)
                results.close()
                run.videos.append({"file": str(source.location), "name": source.name,
                                   "video": str(video_path) if run.options.overlays else None, "frames": frames,
                                   "fps": fps, "people": people, "frames_not_decoded": broken})
                if broken:
                    tqdm.write(f"note: {what}: {broken} of {frames} frames not decoded: {why}", file=sys.stderr)
    if stop:
        raise Terminated if terminated else KeyboardInterrupt


def _folders_written(sources: Sequence[Source], options: PredictOptions) -> set[str]:
    """The `OUTPUT_FOLDERS` a run of `sources` under `options` writes into."""
    images, videos = any(s.kind == "image" for s in sources), any(s.kind != "image" for s in sources)
    wanted = {"overlays": images and options.overlays, "parts": images and options.parts,
              "instances": images and options.instances, "maps": images and options.maps, "videos": videos}
    return {folder for folder, on in wanted.items() if on}


def check_out(sources: Sequence[Source], options: PredictOptions) -> None:
    """Refuse an --out that holds a dataset, whose ground-truth part labels this run's part maps would replace: one
    with annotations.json, or with images/ (a folder predict never writes) and a parts/NAME.png of an input that no
    earlier run of ours listed; one holding a summary.json no predict run wrote or an evaluation (metrics.json),
    whose files this run's listings and overlays would replace; and one where a folder this run writes is a link
    (its files, and an earlier run's removal, would land wherever it leads). Cheap: `posepart predict` calls it
    before the model loads, `run_predict` again."""
    out = options.out
    if (out / ANNOTATIONS_FILE).is_file():
        raise OutputError(f"--out {out} holds a dataset ({ANNOTATIONS_FILE}): predictions would replace its part "
                          f"labels in parts/; choose another --out")
    foreign = [name for name, ours in ((SUMMARY_FILE, earlier_names(out) is not None), (METRICS_FILE, False))
               if (out / name).exists() and not ours]  # predict writes no metrics.json
    if foreign:  # before: replaced, and an evaluate --out kept a report of others
        raise OutputError(f"--out {out} holds {' and '.join(foreign)}, which no posepart predict run wrote (an "
                          f"evaluate --out, or a file of your own): predict writes its own listings there; choose "
                          f"another --out")
    if options.overlays and any(s.kind != "image" for s in sources) and not utf8(str(out)):
        raise OutputError(f"--out {str(out)!r}: its name is not UTF-8 text, which OpenCV's video writer cannot take "
                          f"(it crashed the process): choose another --out")
    linked = next((folder for folder in sorted(_folders_written(sources, options)) if (out / folder).is_symlink()),
                  None)
    if linked is not None:
        raise OutputError(f"--out {out}: {linked}/ is a link ({(out / linked).resolve()}); predict writes and replaces "
                          f"files there: remove the link or choose another --out")
    if not options.parts or not (out / IMAGES_DIR).is_dir():
        return
    ours = earlier_names(out) or set()
    clash = next((s.name for s in sources if s.kind == "image" and s.name not in ours
                  and (out / OUTPUTS["parts"].format(s.name)).exists()), None)
    if clash is not None:
        raise OutputError(f"--out {out} looks like a dataset ({IMAGES_DIR}/, parts/): predictions would replace "
                          f"{OUTPUTS['parts'].format(clash)}, which no earlier predict run wrote; choose another "
                          f"--out")


def run_predict(predictor: Predictor, sources: list[Source], options: PredictOptions,
                failures: list[dict[str, str]] | None = None) -> dict[str, Any]:
    """Process every source (images batched together, then each video), write OUT (module docstring) and return
    the summary dict (also OUT/summary.json). Ctrl-C stops early: the files still list what was done, and the
    summary has "interrupted": true. An --out that holds a dataset is refused; an earlier run's files there go."""
    output_folder(options.out)
    check_out(sources, options)
    for stream in (RESULTS_FILE, OUTPUTS["frames"]):  # what a killed run's streams left (`JsonArrayWriter`)
        for orphan in remove_orphans((options.out / stream).parent):  # replaced as an earlier run's files are
            tqdm.write(f"removed {orphan}: the results a killed run had streamed", file=sys.stderr)
    replace_earlier_run(options.out, {Path(s.location).resolve() for s in sources if s.kind != "webcam"})
    images = [s for s in sources if s.kind == "image"]
    if options.maps and len(images) < len(sources):  # before, said nowhere
        tqdm.write("note: --maps draws the maps of still images only, not of video frames", file=sys.stderr)
    # keypoints.json streams (memory stays flat over a folder of any size) and takes its name at the end, so that a
    # disk that fills, or a second Ctrl-C, leaves no half-written file; a run of videos alone writes none
    with JsonArrayWriter(options.out / RESULTS_FILE) if images or not sources else nullcontext() as results:
        run = _Run(predictor, options, results)
        for failure in failures or []:
            run.fail(failure["input"], failure["error"])
        interrupted = False
        try:
            if images:
                _images(run, images)
            for source in sources:
                if source.kind != "image":
                    _video(run, source)
        except KeyboardInterrupt:
            interrupted = True
            tqdm.write("interrupted: writing the results of the inputs done so far", file=sys.stderr)
        run.note_unlisted()
        summary, written = {**run.summary(), "interrupted": interrupted}, False
        try:
            with signals_held():  # an interrupt now waits for the listings, then has nothing left to stop
                if results is not None:
                    results.close()
                write_json_atomic(options.out / SUMMARY_FILE, summary, indent=1)
                written = True
        except KeyboardInterrupt:
            if not written:  # where signals cannot be held
                raise
    return summary
