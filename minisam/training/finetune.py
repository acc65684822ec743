"""Fine-tuning SAM's prompt encoder and mask decoder on one's own images, the image encoder frozen.

Paper: Kirillov et al. 2023, section 3 ("Segment Anything Model": the heavy image encoder runs
once per image, the light prompt encoder and mask decoder run per prompt) and appendix A
("Training algorithm"). Because the encoder is frozen, each image's embedding is computed once
(:meth:`minisam.SamPredictor.set_image`) and cached on disk; training then only runs the
prompt encoder and decoder, which is what makes fine-tuning on a CPU practical.

What one step does (:func:`minisam.training.decoder_training.interactive_rounds`, appendix A):
``batch`` target masks are drawn uniformly from the training masks, each prompted by a point
or a noisy box (one fair coin per step), then 10 more rounds of clicks sampled from the error
region and fed-back low-res logits; 20 focal : 1 dice on the best output plus the IoU head's
MSE, on 4 of the 11 rounds. Then the gradient is clipped to global norm 1.0 and one AdamW step
is taken (betas 0.9 / 0.999, weight decay 0.1 as in the paper).

Learning rate: linear warm-up over ``warmup`` steps (default ``min(250, steps // 10)``, at
least 1; the paper warms up for 250) to ``lr``, then constant: :func:`minisam.training.optim.sam_lr`
with no decay steps. A fine-tuning run is too short for the paper's step decays at 60k/86k.
The IoU head is trained on all three outputs by default (``iou_outputs="all"``, SAM 2's
``supervise_all_iou``, the recipe of the shipped micro model): its ranking is what picks the
mask a user gets from one click. ``"best"`` is the paper's choice.

Data (:func:`read_folder`, :func:`read_coco`): a folder ``images/NAME.png|jpg|jpeg`` with
``masks/NAME/*.png`` (one PNG per object; any nonzero pixel is object), or a COCO JSON with
polygons or RLE (:mod:`minisam.training.coco_masks`). Everything is read and checked before
anything is written: every image and mask must decode, every mask must match its image's size
and be non-empty, every COCO annotation must name an image of ``images``. Each failure raises
:class:`DatasetError` (or :class:`minisam.ImageError` for an image file) naming the file or
key and the shapes. COCO crowd annotations (``iscrowd: 1``, several objects in one region)
and COCO images without annotations are left out and counted in the log.

Targets live in the model's input frame: each mask is resized like its image
(``ResizeLongestSide``, Pillow bilinear, kept where at least half covered) and padded
bottom/right to S x S, as :meth:`minisam.SamPredictor.set_image` prepares the image. A mask
that vanishes at that size (an object smaller than a pixel after downscaling) is left out and
counted.

Validation: a deterministic hold-out of whole images (``val_fraction`` of them, at least one,
chosen by a generator seeded from ``seed`` alone, so a resumed run has the same split).
For every mask of the held-out images, at the original resolution with
:class:`minisam.SamPredictor` (what a user gets): ``point_iou``, the IoU of the mask with the
highest **predicted** IoU of the three for a click at the object's most interior pixel
(:func:`minisam.training.shapes.interior_point`); ``point_best_of_3_iou``, the best of the three
(the oracle the paper's ambiguity metric uses); ``box_iou``, the single mask for the object's
tight box. Measured before the first step and after the last.

Outputs in ``out_dir``: ``finetuned.pth`` (the whole model in the official ``state_dict``
format, :func:`minisam.save_checkpoint`: the frozen encoder's weights unchanged and the trained
prompt encoder and decoder), ``finetune_log.json`` (per-step loss, lr and gradient norm,
validation before and after, seconds), ``finetune_state.npz`` (the resumable state: trained
weights, AdamW moments and step counts, the step, the generator state, the recipe) and
``embeddings/`` (the cache, one ``.npz`` per image keyed by image name, pixel hash and encoder
hash, so a changed image or another model never reuses a stale embedding). The state is
written every ``save_every`` steps and at the end, to a temporary file renamed into place, so
a run killed at any point loses at most ``save_every`` steps. ``resume=True`` continues it: the
same steps, batches and clicks as an uninterrupted run, bit for bit. An ``out_dir`` that holds
a previous run's output is refused unless ``resume`` or ``force`` (start over; the embedding
cache is kept, its keys make it safe to reuse).

Shapes (``docs/shapes.md``): H, W an image, S the model input side, C, G the embedding,
N the masks of one step, M all training masks.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from minisam.errors import ImageError, MinisamError

FORMAT_VERSION = 1
STATE_NAME = "finetune_state.npz"
CHECKPOINT_NAME = "finetuned.pth"
LOG_NAME = "finetune_log.json"
EMBEDDINGS_DIR = "embeddings"
OUTPUT_NAMES = (STATE_NAME, CHECKPOINT_NAME, LOG_NAME, EMBEDDINGS_DIR)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

#: The recipe's defaults. ``warmup=None``: ``min(250, steps // 10)``, at least 1.
DEFAULTS = dict(steps=300, lr=1e-4, batch=4, val_fraction=0.2, seed=0, warmup=None, weight_decay=0.1,
                clip=1.0, graded_rounds=4, rounds=11, iou_outputs="all")
RECIPE_KEYS = tuple(DEFAULTS)
_SPLIT_STREAM = 1  # the split's generator is seeded with (seed, 1), the training one with seed


class DatasetError(MinisamError, ValueError):
    """A dataset that cannot be used: names the file or key, and the shapes where they disagree."""


class FinetuneError(MinisamError):
    """An output folder, saved state or recipe that does not fit the run asked for."""


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


# ----------------------------------------------------------------------------- masks and datasets

@dataclass(frozen=True)
class Mask:
    """One object mask, bit-packed (a dataset's masks at full resolution add up)."""
    source: str  # the PNG file, or "FILE: annotations[i] (id N)"
    shape: Tuple[int, int]  # (H, W)
    bits: np.ndarray = field(repr=False)  # [ceil(H * W / 8)] uint8

    @staticmethod
    def pack(mask: np.ndarray, source: str) -> "Mask":
        mask = np.asarray(mask, bool)  # [H, W]
        return Mask(source, tuple(int(s) for s in mask.shape), np.packbits(mask.ravel()))

    def array(self) -> np.ndarray:  # -> [H, W] bool
        h, w = self.shape
        return np.unpackbits(self.bits, count=h * w).reshape(h, w).astype(bool)


@dataclass
class ImageItem:
    name: str  # unique in the dataset: the file stem (folder layout) or COCO file_name
    path: str
    size: Tuple[int, int]  # (H, W) as read_image gives it (EXIF orientation applied)
    digest: str  # hash of the decoded pixels: part of the embedding cache key
    masks: List[Mask]


@dataclass
class Dataset:
    items: List[ImageItem]  # sorted by name
    source: str
    skipped: Dict[str, int] = field(default_factory=dict)

    def fingerprint(self) -> str:
        """A hash of every name, pixel and mask bit: a resumed run must see the same data."""
        h = hashlib.blake2b(digest_size=16)
        for item in self.items:
            h.update(item.name.encode() + b"\0" + item.digest.encode())
            for m in item.masks:
                h.update(repr(m.shape).encode() + m.bits.tobytes())
        return h.hexdigest()


def _image_digest(image: np.ndarray) -> str:
    return hashlib.blake2b(repr(image.shape).encode() + image.tobytes(), digest_size=16).hexdigest()


def _read_image(path: str) -> np.ndarray:  # -> [H, W, 3] uint8
    from minisam.utils.images import read_image
    return read_image(path)  # ImageError names the file


def read_mask_png(path: str) -> np.ndarray:
    """A mask image -> [H, W] bool: any nonzero pixel is object (in any colour channel; an alpha
    channel is ignored; a palette image by its palette index, 0 = background)."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.load()
            mode = im.mode
            a = np.asarray(im)  # [H, W] or [H, W, ch]
    except FileNotFoundError:
        raise DatasetError(f"{path}: no such mask file") from None
    except Exception as exc:  # Pillow raises many types for a truncated or non-image file
        raise DatasetError(f"{path}: cannot read the mask ({type(exc).__name__}: {_one_line(exc)})") from None
    if a.ndim == 3:
        if mode in ("LA", "RGBA", "PA", "La", "RGBa"):
            a = a[..., :-1]  # [H, W, ch - 1] without alpha
        return (a != 0).any(-1)  # [H, W]
    if a.ndim != 2:
        raise DatasetError(f"{path}: a mask must be a 2-D image, got shape {a.shape}")
    return a != 0  # [H, W]


def _check_mask(mask: np.ndarray, source: str, image_path: str, size: Tuple[int, int]) -> None:
    if mask.shape != size:
        raise DatasetError(f"{source}: mask is {mask.shape[0]} x {mask.shape[1]} (H x W), its image {image_path} "
                           f"is {size[0]} x {size[1]}")
    if not mask.any():
        raise DatasetError(f"{source}: empty mask (no object pixel)")


def _visible(names) -> List[str]:
    return sorted(n for n in names if not n.startswith("."))


def read_folder(root: str) -> Dataset:
    """``root/images/NAME.{png,jpg,jpeg}`` and ``root/masks/NAME/*.png``: every image needs at
    least one mask, every mask folder an image. Hidden files are ignored, and so are files in a
    mask folder that are not ``.png``."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise DatasetError(f"{root}: no such data folder")
    images_dir, masks_dir = os.path.join(root, "images"), os.path.join(root, "masks")
    layout = "the layout is images/NAME.png|jpg and masks/NAME/*.png"
    for d in (images_dir, masks_dir):
        if not os.path.isdir(d):
            raise DatasetError(f"{d}: missing folder ({layout})")
    stems: Dict[str, str] = {}
    for fname in _visible(os.listdir(images_dir)):
        stem, suffix = os.path.splitext(fname)
        path = os.path.join(images_dir, fname)
        if suffix.lower() not in IMAGE_SUFFIXES or not os.path.isfile(path):
            continue
        if stem in stems:
            raise DatasetError(f"{path}: two images named {stem!r} ({os.path.basename(stems[stem])} and {fname})")
        stems[stem] = path
    if not stems:
        raise DatasetError(f"{images_dir}: no .png or .jpg images ({layout})")
    orphans = [d for d in _visible(os.listdir(masks_dir))
               if os.path.isdir(os.path.join(masks_dir, d)) and d not in stems]
    if orphans:
        raise DatasetError(f"{os.path.join(masks_dir, orphans[0])}: mask folder without an image "
                           f"images/{orphans[0]}.png|jpg")
    items = []
    for stem in sorted(stems):
        mdir = os.path.join(masks_dir, stem)
        if not os.path.isdir(mdir):
            raise DatasetError(f"{stems[stem]}: no masks (expected the folder {mdir} of PNG masks)")
        pngs = [f for f in _visible(os.listdir(mdir)) if f.lower().endswith(".png")]
        if not pngs:
            raise DatasetError(f"{mdir}: no .png masks for image {stems[stem]}")
        image = _read_image(stems[stem])
        size = image.shape[:2]
        masks = []
        for f in pngs:
            path = os.path.join(mdir, f)
            m = read_mask_png(path)
            _check_mask(m, path, stems[stem], size)
            masks.append(Mask.pack(m, path))
        items.append(ImageItem(stem, stems[stem], size, _image_digest(image), masks))
    return Dataset(items, f"folder {root}")


def read_coco(json_path: str, images_dir: str) -> Dataset:
    """A COCO instances file: ``images`` (``id``, ``file_name`` under ``images_dir``, optional
    ``height``/``width``, which must match the file) and ``annotations`` (``image_id``,
    ``segmentation`` as polygons or RLE, optional ``iscrowd``)."""
    from minisam.training.coco_masks import CocoError, decode_segmentation
    json_path, images_dir = os.fspath(json_path), os.fspath(images_dir)
    if not os.path.isfile(json_path):
        raise DatasetError(f"{json_path}: no such COCO file")
    if not os.path.isdir(images_dir):
        raise DatasetError(f"{images_dir}: no such images folder")
    try:
        with open(json_path, "rb") as f:
            coco = json.loads(f.read().decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DatasetError(f"{json_path}: not a readable JSON file ({_one_line(exc)})") from None
    if not isinstance(coco, dict):
        raise DatasetError(f"{json_path}: the top level must be an object with 'images' and 'annotations'")
    for key in ("images", "annotations"):
        if not isinstance(coco.get(key), list):
            raise DatasetError(f"{json_path}: '{key}' must be a list")
    images: Dict[object, dict] = {}
    for i, im in enumerate(coco["images"]):
        where = f"{json_path}: images[{i}]"
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise DatasetError(f"{where}: needs 'id' and 'file_name'")
        if not isinstance(im["id"], (int, str)) or isinstance(im["id"], bool):
            raise DatasetError(f"{where}: 'id' must be an integer or a string, got {im['id']!r}")
        if im["id"] in images:
            raise DatasetError(f"{where}: image id {im['id']!r} appears twice")
        images[im["id"]] = im
    per_image: Dict[object, List[Tuple[str, dict]]] = {}
    crowd = 0
    for i, ann in enumerate(coco["annotations"]):
        where = f"{json_path}: annotations[{i}]" + (f" (id {ann['id']})" if isinstance(ann, dict) and "id" in ann
                                                     else "")
        if not isinstance(ann, dict):
            raise DatasetError(f"{where}: must be an object")
        if "image_id" not in ann:
            raise DatasetError(f"{where}: no 'image_id'")
        try:
            known = ann["image_id"] in images
        except TypeError:  # an unhashable image_id (a list)
            known = False
        if not known:
            raise DatasetError(f"{where}: image_id {ann['image_id']!r} is not in 'images'")
        if "segmentation" not in ann:
            raise DatasetError(f"{where}: no 'segmentation' (boxes alone cannot train a mask decoder)")
        if ann.get("iscrowd", 0):
            crowd += 1
            continue
        per_image.setdefault(ann["image_id"], []).append((where, ann))
    items, names = [], {}
    for image_id in sorted(per_image, key=lambda k: images[k]["file_name"]):
        im = images[image_id]
        if im["file_name"] in names:  # the name keys the split and the embedding cache
            raise DatasetError(f"{json_path}: images {names[im['file_name']]!r} and {image_id!r} are both "
                               f"{im['file_name']!r}")
        names[im["file_name"]] = image_id
        path = os.path.join(images_dir, im["file_name"])
        image = _read_image(path)
        size = image.shape[:2]
        for axis, key in enumerate(("height", "width")):
            if key in im and im[key] != size[axis]:
                raise DatasetError(f"{json_path}: image id {image_id!r} declares {key} {im[key]!r}, the file "
                                   f"{path} is {size[0]} x {size[1]} (H x W)")
        masks = []
        for where, ann in per_image[image_id]:
            try:
                m = decode_segmentation(ann["segmentation"], size[0], size[1], where)
            except CocoError as exc:
                raise DatasetError(str(exc)) from None
            _check_mask(m, where, path, size)
            masks.append(Mask.pack(m, where))
        items.append(ImageItem(im["file_name"], path, size, _image_digest(image), masks))
    if not items:
        raise DatasetError(f"{json_path}: no image has a (non-crowd) annotation")
    skipped = {"crowd_annotations": crowd, "images_without_annotations": len(images) - len(items)}
    return Dataset(items, f"COCO {json_path} with images in {images_dir}", skipped)


def load_dataset(data: Optional[str] = None, coco: Optional[str] = None, images: Optional[str] = None) -> Dataset:
    """The folder layout at ``data``, or the COCO file ``coco`` with its ``images`` folder."""
    if coco is not None or images is not None:
        if data is not None:
            raise DatasetError("give either a DATA folder or --coco FILE --images DIR, not both")
        if coco is None or images is None:
            raise DatasetError("--coco FILE and --images DIR go together")
        return read_coco(coco, images)
    if data is None:
        raise DatasetError("no data: give a DATA folder (images/, masks/) or --coco FILE --images DIR")
    return read_folder(data)


# ----------------------------------------------------------------------------- model frame

def mask_to_input_frame(mask: np.ndarray, size: int) -> np.ndarray:
    """[H, W] bool -> [S, S] bool: resized like its image (long side S, Pillow bilinear, kept where
    at least half covered), zero-padded bottom/right as ``Sam.preprocess`` pads the image."""
    from PIL import Image

    from minisam.utils.transforms import ResizeLongestSide
    H, W = mask.shape
    h, w = ResizeLongestSide.get_preprocess_shape(H, W, size)
    if (h, w) != (H, W):
        small = Image.fromarray(mask.astype(np.uint8) * 255).resize((w, h), Image.BILINEAR)
        mask = np.asarray(small) >= 128  # [h, w]
    out = np.zeros((size, size), bool)  # [S, S]
    out[:h, :w] = mask
    return out


def split_items(items: Sequence[ImageItem], val_fraction: float, seed: int) -> Tuple[List[ImageItem], List[ImageItem]]:
    """(train, val): ``round(val_fraction * n)`` whole images held out (at least 1, at most n - 1),
    drawn by a generator seeded with ``(seed, 1)`` from the items sorted by name."""
    items = sorted(items, key=lambda it: it.name)
    n = len(items)
    if n < 2:
        raise DatasetError(f"fine-tuning needs at least 2 images (one to train on, one to validate), got {n}")
    n_val = min(n - 1, max(1, int(round(val_fraction * n))))
    order = np.random.default_rng([seed, _SPLIT_STREAM]).permutation(n)  # [n]
    held = set(order[:n_val].tolist())
    return [it for i, it in enumerate(items) if i not in held], [it for i, it in enumerate(items) if i in held]


def model_identity(sam) -> Dict[str, str]:
    """``{"encoder": hash of the image encoder's weights and the preprocessing, "model": hash of
    every weight}``: the embedding cache is keyed by the first, a resumed run checks the second."""
    from minisam.checkpoints.param_tree import flatten
    cfg = sam.config
    enc = hashlib.blake2b(digest_size=16)
    enc.update(repr((cfg.img_size, tuple(cfg.pixel_mean), tuple(cfg.pixel_std))).encode())
    rest = hashlib.blake2b(digest_size=16)
    for name, a in sorted(flatten(sam.params).items()):
        h = enc if name.startswith("image_encoder.") else rest
        a = np.ascontiguousarray(a)
        h.update(f"{name}:{a.dtype.str}:{a.shape}".encode())
        h.update(a.view(np.uint8).ravel() if a.size else b"")
    encoder = enc.hexdigest()
    return {"encoder": encoder, "model": hashlib.blake2b((encoder + rest.hexdigest()).encode(),
                                                         digest_size=16).hexdigest()}


def _embedding_path(folder: str, item: ImageItem, encoder_id: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", item.name)[-80:]
    return os.path.join(folder, f"{safe}.{item.digest[:16]}.{encoder_id[:16]}.npz")


def cache_embeddings(sam, items: Sequence[ImageItem], folder: str, progress: bool = False,
                     encoder_id: Optional[str] = None) -> Dict[str, str]:
    """``{name: path}`` of each image's embedding under ``folder``: computed with the frozen encoder
    (:meth:`SamPredictor.set_image`) unless a readable cached file with the same key exists,
    written to a temporary file and renamed into place (a killed run leaves no half file)."""
    from tqdm import tqdm

    from minisam.predictor import SamPredictor
    predictor = SamPredictor(sam)
    encoder_id = encoder_id or model_identity(sam)["encoder"]  # hashing vit_h's encoder takes seconds
    paths = {}
    for item in tqdm(items, desc="embeddings", disable=not progress, unit="image"):
        path = _embedding_path(folder, item, encoder_id)
        paths[item.name] = path
        if os.path.isfile(path):
            try:
                predictor.load_embedding(path)
                continue
            except ImageError:  # damaged: compute it again
                pass
        predictor.set_image(_read_image(item.path))
        _write_atomic(path, predictor.save_embedding)
    return paths


def _load_embedding(predictor, path: str) -> np.ndarray:  # -> [1, C, G, G]
    predictor.load_embedding(path)
    return predictor.get_image_embedding()


# ----------------------------------------------------------------------------- validation

def evaluate(sam, items: Sequence[ImageItem], embeddings: Dict[str, str]) -> Dict[str, float]:
    """Mean IoUs over every mask of ``items`` at the original resolution (module docstring):
    ``point_iou`` (the mask of highest predicted IoU), ``point_best_of_3_iou``, ``box_iou``."""
    from minisam.predictor import SamPredictor
    from minisam.training.interactive import mask_box
    from minisam.training.shapes import interior_point
    predictor = SamPredictor(sam)
    top, best3, box = [], [], []
    for item in items:
        predictor.load_embedding(embeddings[item.name])
        for mask in item.masks:
            m = mask.array()  # [H, W]
            pt = interior_point(m) - 0.5  # [2] the pixel index of the most interior pixel
            masks, scores, _ = predictor.predict(point_coords=pt[None], point_labels=np.array([1]))  # [3, H, W]
            ious = [float((mk & m).sum() / max((mk | m).sum(), 1)) for mk in masks]
            top.append(ious[int(np.argmax(scores))])
            best3.append(max(ious))
            bm, _, _ = predictor.predict(box=mask_box(m), multimask_output=False)  # [1, H, W]
            box.append(float((bm[0] & m).sum() / max((bm[0] | m).sum(), 1)))
    return {"point_iou": float(np.mean(top)), "point_best_of_3_iou": float(np.mean(best3)),
            "box_iou": float(np.mean(box)), "masks": len(top)}


# ----------------------------------------------------------------------------- state

def check_out_dir(out_dir: str, resume: bool, force: bool) -> Optional[str]:
    """Refuse a folder holding a previous run's output unless ``resume`` or ``force``; with
    ``resume``, return the state file's path (which must exist). Touches nothing."""
    out_dir = os.fspath(out_dir)
    if resume and force:
        raise FinetuneError("--resume continues a run and --force starts it over: give one of them")
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise FinetuneError(f"{out_dir}: exists and is not a folder")
    state = os.path.join(out_dir, STATE_NAME)
    if resume:
        if not os.path.isfile(state):
            raise FinetuneError(f"{state}: no fine-tuning state to resume")
        return state
    present = [n for n in OUTPUT_NAMES if os.path.exists(os.path.join(out_dir, n))]
    if present and not force:
        raise FinetuneError(f"{out_dir} already holds a fine-tuning run ({', '.join(present)}); "
                            "pass --resume to continue it or --force to start over")
    return None


def _trained(sam) -> Dict:
    from minisam.training.decoder_training import TRAINED_PARTS
    return {part: sam.params[part] for part in TRAINED_PARTS}


def _write_atomic(path: str, write: Callable) -> None:
    """``write(tmp)`` writes a temporary file beside ``path``, renamed over it when complete: a
    killed run leaves the old file or the new one, never half of one."""
    tmp = f"{path}.{os.getpid()}.part"
    try:
        write(tmp)
        os.replace(tmp, path)
    except OSError as exc:
        raise FinetuneError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def save_state(path: str, sam, opt_state: Dict, meta: Dict) -> None:
    """The trained weights, AdamW moments and step counts, and ``meta`` (step, generator,
    recipe, log) in one ``.npz``, written atomically."""
    from minisam.checkpoints.param_tree import flatten
    arrays = {f"param/{k}": v for k, v in flatten(_trained(sam)).items()}
    for k, st in opt_state.items():
        arrays[f"exp_avg/{k}"], arrays[f"exp_avg_sq/{k}"] = st["exp_avg"], st["exp_avg_sq"]
    meta = dict(meta, format_version=FORMAT_VERSION, adam_steps={k: int(st["step"]) for k, st in opt_state.items()})
    arrays["meta"] = np.array(json.dumps(meta))
    def write(tmp):
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez(f, **arrays)
    _write_atomic(path, write)


_META_KEYS = ("step", "rng", "recipe", "history", "runs", "seconds", "val_before", "model_name", "model_identity",
              "dataset", "dataset_source", "split", "adam_steps")


def read_state(path: str) -> Tuple[Dict, Dict[str, np.ndarray], Dict]:
    """(meta, flat trained weights, AdamW state) from :func:`save_state`'s file."""
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
        meta = json.loads(str(data.pop("meta")))
    except Exception as exc:  # a truncated zip, a foreign file: say which file
        raise FinetuneError(f"{path}: not a readable fine-tuning state ({type(exc).__name__}: {_one_line(exc)})") \
            from None
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version != FORMAT_VERSION:
        raise FinetuneError(f"{path}: fine-tuning state format {version!r}, this minisam reads {FORMAT_VERSION}")
    missing = [k for k in _META_KEYS if k not in meta]
    if missing:
        raise FinetuneError(f"{path}: fine-tuning state without {', '.join(missing)}")
    params = {k[len("param/"):]: v for k, v in data.items() if k.startswith("param/")}
    try:
        opt = {k: {"step": int(s), "exp_avg": data[f"exp_avg/{k}"], "exp_avg_sq": data[f"exp_avg_sq/{k}"]}
               for k, s in meta["adam_steps"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise FinetuneError(f"{path}: fine-tuning state with incomplete AdamW moments ({_one_line(exc)})") from None
    return meta, params, opt


def _restore(sam, path: str, params: Dict[str, np.ndarray], opt: Dict) -> None:
    from minisam.checkpoints.param_tree import flatten, nest
    want = flatten(_trained(sam))
    if set(params) != set(want) or set(opt) != set(want) or any(
            params[k].shape != v.shape or params[k].dtype != v.dtype for k, v in want.items()):
        raise FinetuneError(f"{path}: the saved weights do not fit this model's prompt encoder and decoder")
    sam.params.update(nest({k: np.ascontiguousarray(v) for k, v in params.items()}))


# ----------------------------------------------------------------------------- the run

def _resolve_recipe(given: Dict, stored: Optional[Dict], state_step: int, path: str) -> Dict:
    if stored is None:
        recipe = {k: DEFAULTS[k] if given.get(k) is None else given[k] for k in RECIPE_KEYS}
        if recipe["warmup"] is None:
            recipe["warmup"] = max(1, min(250, recipe["steps"] // 10))
        return recipe
    recipe = dict(stored)
    for k, v in given.items():
        if v is None or k not in RECIPE_KEYS:
            continue
        if k == "steps":
            if v < state_step:
                raise FinetuneError(f"{path}: the run is at step {state_step}; --steps {v} would go back")
            recipe["steps"] = v  # more steps continue the same schedule (warm-up, then constant)
        elif v != stored[k]:
            raise FinetuneError(f"{path}: the run being resumed has {k} {stored[k]!r}, not {v!r} "
                                "(drop the option, or start over with --force)")
    return recipe


def _check_recipe(r: Dict) -> None:
    checks = [("steps", r["steps"] >= 1, "at least 1"), ("lr", r["lr"] > 0 and np.isfinite(r["lr"]), "positive"),
              ("batch", r["batch"] >= 1, "at least 1"), ("val_fraction", 0 < r["val_fraction"] < 1, "between 0 and 1"),
              ("seed", r["seed"] >= 0, "at least 0"), ("warmup", r["warmup"] is None or r["warmup"] >= 1, "at least 1"),
              ("weight_decay", r["weight_decay"] >= 0, "at least 0"), ("clip", r["clip"] > 0, "positive"),
              ("rounds", 1 <= r["rounds"] <= 11, "1 to 11"),
              ("graded_rounds", 1 <= r["graded_rounds"] <= 11, "1 to 11 (at most rounds are graded)"),
              ("iou_outputs", r["iou_outputs"] in ("all", "best"), "'all' or 'best'")]
    for name, ok, want in checks:
        if not ok:
            raise FinetuneError(f"{name} must be {want}, got {r[name]!r}")


def finetune(dataset: Dataset, sam, out_dir: str, *, model_name: str = "", resume: bool = False,
             force: bool = False, save_every: int = 50, progress: bool = True, log: Callable = print,
             on_step: Optional[Callable] = None, **recipe) -> Dict:
    """Fine-tune ``sam``'s prompt encoder and mask decoder on ``dataset``; write into ``out_dir``.

    ``recipe``: any of :data:`DEFAULTS` (``steps``, ``lr``, ``batch`` masks a step,
    ``val_fraction``, ``seed``, ``warmup``, ``weight_decay``, ``clip``, ``graded_rounds``,
    ``rounds``, ``iou_outputs``); ``None`` or absent takes the default, or with ``resume`` the
    resumed run's value (a different value is refused, except a larger ``steps``, which
    continues the same schedule). ``sam`` is trained in place. ``on_step(step, loss)`` is called
    after each step and its state save. Returns the log (also written to ``finetune_log.json``).
    Everything that can be refused is refused before ``out_dir`` is created or changed.
    """
    from tqdm import tqdm

    from minisam.checkpoints.formats import save_checkpoint
    from minisam.training.decoder_training import interactive_rounds
    from minisam.training.optim import adamw_init, adamw_step, clip_grad_norm, sam_lr

    started = time.time()
    out_dir = os.fspath(out_dir)
    if save_every < 1:
        raise FinetuneError(f"save_every must be at least 1, got {save_every}")
    unknown = sorted(set(recipe) - set(RECIPE_KEYS))
    if unknown:
        raise FinetuneError(f"unknown recipe option(s) {unknown}; known: {list(RECIPE_KEYS)}")
    given = {k: v for k, v in recipe.items() if v is not None}
    state_path = check_out_dir(out_dir, resume, force)
    identity = model_identity(sam)
    meta = params = opt_state = None
    if state_path is not None:
        meta, params, opt_state = read_state(state_path)
        if meta["model_identity"] != identity["model"]:
            raise FinetuneError(f"{state_path}: the run was started from another model ({meta['model_name']}); "
                                "give the same --model or --checkpoint to resume it")
        if meta["dataset"] != dataset.fingerprint():
            raise FinetuneError(f"{state_path}: the data differs from the run being resumed "
                                f"({meta['dataset_source']}); resume with the same images and masks")
        _restore(sam, state_path, params, opt_state)  # in memory only; refuses a state of another shape
    r = _resolve_recipe(given, meta["recipe"] if meta else None, meta["step"] if meta else 0, state_path)
    _check_recipe(r)
    cfg, S = sam.config, sam.config.img_size

    train_items, val_items = split_items(dataset.items, r["val_fraction"], r["seed"])
    owner, pool, vanished = [], [], 0  # the image index [M] and bit-packed S x S target of each training mask
    for i, item in enumerate(train_items):
        for m in item.masks:
            t = mask_to_input_frame(m.array(), S)  # [S, S]
            if not t.any():
                vanished += 1
                continue
            owner.append(i)
            pool.append(np.packbits(t.ravel()))
    if not pool:
        raise DatasetError(f"no training mask is left at the model's input size {S} x {S} "
                           f"({vanished} vanish when their images are resized)")
    owner = np.array(owner)  # [M]
    pool = np.stack(pool)  # [M, S * S / 8] uint8

    # ---- from here on the output folder is written
    emb_dir = os.path.join(out_dir, EMBEDDINGS_DIR)
    try:
        os.makedirs(emb_dir, exist_ok=True)
    except OSError as exc:
        raise FinetuneError(f"cannot create {emb_dir}: {exc.strerror or exc}") from None
    if force:
        for name in (STATE_NAME, CHECKPOINT_NAME, LOG_NAME):
            if os.path.exists(os.path.join(out_dir, name)):
                os.remove(os.path.join(out_dir, name))
    t0 = time.time()
    embeddings = cache_embeddings(sam, train_items + val_items, emb_dir, progress, identity["encoder"])
    from minisam.predictor import SamPredictor
    loader = SamPredictor(sam)
    emb = np.concatenate([_load_embedding(loader, embeddings[it.name]) for it in train_items])  # [I, C, G, G]
    seconds_embeddings = time.time() - t0

    state_file = os.path.join(out_dir, STATE_NAME)
    rng = np.random.default_rng(r["seed"])
    if meta is None:
        t0 = time.time()
        val_before = evaluate(sam, val_items, embeddings)
        log(f"validation before: point IoU {val_before['point_iou']:.4f} (best of 3 "
            f"{val_before['point_best_of_3_iou']:.4f}), box IoU {val_before['box_iou']:.4f} "
            f"on {val_before['masks']} masks of {len(val_items)} images")
        meta = {"step": 0, "history": [], "runs": [], "val_before": val_before,
                "seconds": {"embeddings": 0.0, "validation_before": time.time() - t0, "train": 0.0},
                "model_name": model_name, "model_identity": identity["model"], "dataset": dataset.fingerprint(),
                "dataset_source": dataset.source, "config": cfg.to_dict(),
                "split": {"train": [it.name for it in train_items], "val": [it.name for it in val_items]}}
        opt_state = adamw_init(_trained(sam))
    else:
        rng.bit_generator.state = meta["rng"]
        log(f"resuming at step {meta['step']} of {r['steps']}")
    meta["recipe"] = r
    meta["seconds"]["embeddings"] += seconds_embeddings
    run = {"run": len(meta["runs"]) + 1, "start_step": meta["step"], "end_step": meta["step"], "seconds": 0.0}
    meta["runs"].append(run)

    def save():
        meta["rng"] = rng.bit_generator.state
        save_state(state_file, sam, opt_state, meta)

    trained = _trained(sam)
    t0 = time.time()
    train_before = meta["seconds"]["train"]
    bar = tqdm(range(meta["step"], r["steps"]), desc="finetune", disable=not progress, initial=meta["step"],
               total=r["steps"], unit="step")
    saved = meta["step"]
    try:
        for step in bar:
            lr = sam_lr(step, base_lr=r["lr"], warmup_steps=r["warmup"], decay_steps=())
            pick = rng.choice(len(pool), size=min(r["batch"], len(pool)), replace=False)  # [N]
            first = "box" if rng.random() < 0.5 else "point"
            targets = np.unpackbits(pool[pick], axis=1, count=S * S).reshape(-1, S, S).astype(bool)  # [N, S, S]
            loss, grads = interactive_rounds(sam.params, cfg, emb[owner[pick]], targets, rng, first, S,
                                             graded_rounds=r["graded_rounds"], rounds=r["rounds"],
                                             iou_outputs=r["iou_outputs"])  # emb [N, C, G, G]
            norm = float(clip_grad_norm(grads, r["clip"]))
            if not (np.isfinite(loss) and np.isfinite(norm)):
                raise FinetuneError(f"the loss or its gradient became {loss if not np.isfinite(loss) else norm} at "
                                    f"step {step + 1} (is lr {r['lr']:g} too high?); the last saved state is kept")
            adamw_step(trained, grads, opt_state, lr=lr, weight_decay=r["weight_decay"])
            meta["step"] = step + 1
            meta["history"].append({"step": step + 1, "loss": float(loss), "lr": lr, "grad_norm": norm,
                                    "first_prompt": first})
            run["end_step"], run["seconds"] = step + 1, time.time() - t0
            meta["seconds"]["train"] = train_before + run["seconds"]
            if (step + 1) % save_every == 0 or step + 1 == r["steps"]:
                save()
                saved = step + 1
            bar.set_postfix(loss=f"{float(loss):.4f}")
            if on_step is not None:
                on_step(step + 1, float(loss))
    except KeyboardInterrupt:  # a killed run keeps its last saved state: say how to go on
        bar.close()
        log(f"interrupted after step {meta['step']}; the state of step {saved} is saved in {state_file}: "
            "continue with --resume")
        raise
    bar.close()
    if meta["step"] == run["start_step"]:
        save()  # nothing to train (a finished run resumed): the state gets this run's record

    t0 = time.time()
    val_after = evaluate(sam, val_items, embeddings)
    log(f"validation after {meta['step']} steps: point IoU {val_after['point_iou']:.4f} (best of 3 "
        f"{val_after['point_best_of_3_iou']:.4f}), box IoU {val_after['box_iou']:.4f}")
    seconds = dict(meta["seconds"], validation_after=time.time() - t0)
    checkpoint = save_checkpoint(sam, os.path.join(out_dir, CHECKPOINT_NAME), force=True)
    seconds["total_this_run"] = time.time() - started
    result = {"checkpoint": os.path.abspath(checkpoint), "model": model_name, "data": dataset.source,
              "config": cfg.to_dict(), "recipe": r, "save_every": save_every, "steps_done": meta["step"],
              "images": {"train": len(train_items), "val": len(val_items)},
              "masks": {"train": int(len(pool)), "val": sum(len(it.masks) for it in val_items)},
              "skipped": dict(dataset.skipped, masks_vanished_at_input_size=vanished),
              "split": meta["split"], "val_before": meta["val_before"], "val_after": val_after,
              "seconds": seconds, "runs": meta["runs"], "history": meta["history"]}
    def write_log(tmp):
        with open(tmp, "w") as f:
            json.dump(result, f, indent=1)
    _write_atomic(os.path.join(out_dir, LOG_NAME), write_log)
    return result
