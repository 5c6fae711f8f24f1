"""Trial lists, in the two forms recipes ship them:

* Kaldi: ``<enroll> <test> target|nontarget`` (ids of embeddings);
* VoxCeleb: ``1|0 <enroll> <test>`` (1: same speaker), where a name with a '/' that is not an
  id, such as ``id10270/x6uYqmx31kE/00001.wav``, is mapped to an utterance id through a data dir's
  ``wav.scp``: the id whose entry names a file ending with that path.

``<enroll> <test>`` alone is a list without labels: it is scored, with no figures. Names are
mapped the same way in every form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Mapping, Optional, Sequence

import numpy as np

from speechdump.errors import TrialError

KALDI_LABELS = {"target": True, "nontarget": False}
VOXCELEB_LABELS = {"1": True, "0": False}


@dataclass
class Trials:
    enroll: List[str]
    test: List[str]
    is_target: Optional[np.ndarray]  # None: the list has no labels
    path: str

    def __len__(self) -> int:
        return len(self.enroll)

    def ids(self) -> List[str]:
        return list(dict.fromkeys(self.enroll + self.test))


def _form(fields: List[str], path: str, number: int) -> str:
    if len(fields) == 2:
        return "unlabelled"
    if len(fields) == 3 and fields[2] in KALDI_LABELS:
        return "kaldi"
    if len(fields) == 3 and fields[0] in VOXCELEB_LABELS:
        return "voxceleb"
    raise TrialError(f"{path}:{number}: '{' '.join(fields)}' is not a trial: expected "
                     "'<enroll> <test> target|nontarget' (Kaldi), '1|0 <enroll> <test>' "
                     "(VoxCeleb) or '<enroll> <test>' (no labels)")


def read_trials(path: str, wav_scp: Optional[Mapping[str, str]] = None,
                known_ids: Sequence[str] = ()) -> Trials:
    """The trials of ``path``, names mapped to ids: a name in ``known_ids`` or ``wav_scp``, or
    one without a '/', is an id; any other is looked up as the end of a file named by a
    ``wav_scp`` entry. Every line must have the form of the first."""
    enroll, test, labels = [], [], []
    form = None
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            this = _form(fields, path, number)
            if form is None:
                form = this
            elif this != form:
                raise TrialError(f"{path}:{number}: a {this} trial in a list of {form} "
                                 f"trials: '{line.strip()}'")
            if form == "voxceleb":
                labels.append(VOXCELEB_LABELS[fields[0]])
                enroll.append(fields[1])
                test.append(fields[2])
            else:
                enroll.append(fields[0])
                test.append(fields[1])
                if form == "kaldi":
                    labels.append(KALDI_LABELS[fields[2]])
    if form is None:
        raise TrialError(f"{path} holds no trials")
    ids = set(known_ids) | set(wav_scp or ())
    names = [name for name in dict.fromkeys(enroll + test) if "/" in name and name not in ids]
    if names:
        to_id = map_paths(names, wav_scp or {}, path)
        enroll = [to_id.get(name, name) for name in enroll]
        test = [to_id.get(name, name) for name in test]
    return Trials(enroll, test, np.array(labels, dtype=bool) if labels else None, path)


def map_paths(names: Sequence[str], wav_scp: Mapping[str, str], trials_path: str
              ) -> Dict[str, str]:
    """{name: id} for trial names that end a file path of a ``wav_scp`` entry (component by
    component). A name that no entry or several entries end is an error naming it."""
    by_depth: Dict[int, Dict[str, Optional[str]]] = {}
    to_id, unknown, ambiguous = {}, [], []
    for name in names:
        parts = name.strip("/").split("/")
        depth = len(parts)
        if depth not in by_depth:
            by_depth[depth] = _suffix_index(wav_scp, depth)
        key = "/".join(parts)
        if key not in by_depth[depth]:
            unknown.append(name)
        elif by_depth[depth][key] is None:
            ambiguous.append(name)
        else:
            to_id[name] = by_depth[depth][key]
    if unknown:
        where = "the data dir's wav.scp (--data_dir)" if wav_scp else \
            "no wav.scp to map paths with (give --data_dir)"
        raise TrialError(f"{trials_path}: {len(unknown)} trial names are neither embedding ids "
                         f"nor files of {where}; the first: {' '.join(unknown[:5])}")
    if ambiguous:
        raise TrialError(f"{trials_path}: {len(ambiguous)} trial paths end the files of several "
                         f"wav.scp entries; the first: {' '.join(ambiguous[:5])}")
    return to_id


def _suffix_index(wav_scp: Mapping[str, str], depth: int) -> Dict[str, Optional[str]]:
    """{last ``depth`` path components of a file an entry names: its id, None where several
    ids share them}."""
    index: Dict[str, Optional[str]] = {}
    for utt, entry in wav_scp.items():
        for word in set(entry.split()):
            parts = word.strip("'\"").split("/")
            if len(parts) < depth or "." not in parts[-1]:
                continue
            key = "/".join(parts[-depth:])
            index[key] = utt if index.get(key, utt) == utt else None
    return index
