"""The datasets: where each one's files live in a data folder, where they come from, their sha256.

A *data folder* is laid out like this (the same layout for ``$ANYFORMER_DATA`` and the cache)::

    tinyshakespeare/input.txt
    sst2/{train,dev,test}.tsv            (+ optional test_labeled.tsv)
    multi30k/{split}.{en,de}             (plain text, decompressed)
    fsdd/recordings/{digit}_{speaker}_{index}.wav
    torchvision/MNIST/raw/..., torchvision/FashionMNIST/raw/..., torchvision/cifar-10-batches-py/...
    torchaudio/SpeechCommands/speech_commands_v0.02/...

Each :class:`~.specs.Dataset` below names its folder in that layout, its pinned files and the
remote files they are made from. All sha256 values were computed from the files themselves.
"""

from __future__ import annotations

import hashlib
from importlib import resources

from .errors import DataError
from .specs import DataFile, Dataset, Remote

# --- the pinned values -------------------------------------------------------------------------

FSDD_VERSION = "1.0.10"
FSDD_LIST_SHA256 = "6683e4cce57553414a3f46d7e6159c614cdbba1313f3ca0f3ea109523db11ea6"
"""sha256 of ``fsdd_sha256.txt`` = ``ls | LC_ALL=C sort | xargs sha256sum | sha256sum`` in recordings/."""


def _fsdd_files() -> tuple[DataFile, ...]:
    """The 2,500 pinned FSDD recordings, read from the package-data table ``fsdd_sha256.txt``.

    The table is ``sha256sum`` output (so ``sha256sum -c`` can check a folder against it); its own
    digest is pinned too, so an edited or truncated table fails here instead of weakening checks.
    """
    table = resources.files(__package__).joinpath("fsdd_sha256.txt").read_bytes()
    digest = hashlib.sha256(table).hexdigest()
    if digest != FSDD_LIST_SHA256:
        raise DataError(f"fsdd_sha256.txt is damaged: its sha256 is {digest}, expected {FSDD_LIST_SHA256}")
    pairs = (line.split("  ", 1) for line in table.decode("ascii").splitlines())
    return tuple(DataFile(name, sha256) for sha256, name in pairs)


def _multi30k() -> Dataset:
    base = "https://raw.githubusercontent.com/multi30k/dataset/master/data/task1/raw/"
    # The .gz files as served (pinned: the repository is static) ...
    gz_sha256 = {
        "train.en": "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
        "train.de": "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
        "val.en": "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
        "val.de": "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
        "test_2016_flickr.en": "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
        "test_2016_flickr.de": "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
        "test_2017_flickr.en": "76a444ee25172e72695cddb13ae4a3bda59430617be88e0bb46b60504f054074",
        "test_2017_flickr.de": "a2c89666db00c495cd8513b9d708d5a3acc205d7de312ef2bf5fb7ebc1540aee",
        "test_2017_mscoco.en": "aab300bfb4427697987e02cd0aacd44bfe8aa50456231b6474c08038bbed2b58",
        "test_2017_mscoco.de": "799e4854c25d601cb6cb6be29eabe5667734c61ace2f495e03e429031a0bc338",
        "test_2018_flickr.en": "ef4f4844037d4c5dea75c9a8ed5fd78905967a26f67c255e230cc9780032654d",
        "test_2018_flickr.de": "ddd0130c7d97482dc5197a02141dae8dd79f20f03586c480d675c09a32daf608",
    }
    # ... and the text they decompress to.
    text_sha256 = {
        "train.en": "460a15fbd157e34a7a9957ee388c1ca247fe47af3ef25fb50442af6c274e0fc6",
        "train.de": "2c2b73fd2b548fbcde3a875e0a78d6ee94d498bfdee6bd3eae3945779e9ddf72",
        "val.en": "1f2a23d992769b5b3d209b0a10dd0b77c08cceb1f20dfb97ed0aafa49d107227",
        "val.de": "660e09eb7e1da2f856ea13ee5ad3cf6d36b3d5b0b733c857e94c5747a3dfc660",
        "test_2016_flickr.en": "399a4382932c1aadd3ceb9bef1008d388a64c76d4ae4e9d4728c6f4301cac182",
        "test_2016_flickr.de": "4be6b5b3236b79c25475c6bb829800a7ce559e9ba7a1f6c2394fe4d40be46d16",
        "test_2017_flickr.en": "ce1450ddc5ab0834502579d77a170849952e15a2938b34cc503bdc25ebb4fb98",
        "test_2017_flickr.de": "c3078bc3b36808bf9d20eb2347ed6137016179ef59ec0d2b9b8ecc3fb2880081",
        "test_2017_mscoco.en": "43051fdfa86fd5395182e718a94ca67b1b227b9f7c79596ff0f6b813216981d2",
        "test_2017_mscoco.de": "58277df3c75f92f7145a11b910b553d1cf82c439249d4dc237c899609eafac22",
        "test_2018_flickr.en": "4e585c2dd525911a6ea7730e9d0b516239af3f1b1ffae6a2130223cfb639f25e",
        "test_2018_flickr.de": "39fcc8b3331d76fb42d648d019c6898b0d5e58baac87bc2a0bb93f44ec8db207",
    }
    return Dataset(
        "multi30k",
        "Multi30k task 1 English-German caption pairs (train, val, four test sets), one sentence per line",
        "multi30k",
        files=tuple(DataFile(name, sha256) for name, sha256 in text_sha256.items()),
        remotes=tuple(
            Remote(f"{base}{name}.gz", f"multi30k/raw/{name}.gz", "gz", target=name, sha256=sha256)
            for name, sha256 in gz_sha256.items()
        ),
        note="both the downloaded .gz and the decompressed text are pinned",
    )


def _fsdd() -> Dataset:
    files = _fsdd_files()
    prefix = f"free-spoken-digit-dataset-{FSDD_VERSION}/recordings/"
    archive = f"https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v{FSDD_VERSION}.tar.gz"
    return Dataset(
        "fsdd",
        f"Free Spoken Digit Dataset v{FSDD_VERSION}: 8 kHz spoken digits, {{digit}}_{{speaker}}_{{index}}.wav; "
        "2,500 pinned recordings of 5 speakers (george, jackson, lucas, nicolas, theo)",
        "fsdd/recordings",
        files=files,
        # GitHub generates the tarball on request, so its bytes are not pinned; its members are.
        remotes=(
            Remote(
                archive,
                f"fsdd/free-spoken-digit-dataset-{FSDD_VERSION}.tar.gz",
                "tar",
                members=tuple((prefix + f.path, f.path) for f in files),
            ),
        ),
        unpinned_glob="*.wav",
        note=(
            "the release archive's 500 recordings of a 6th speaker (yweweler) have no pinned sha256: "
            "they are not extracted; any unpinned .wav already in the folder is reported, never verified"
        ),
    )


def _torchvision(name: str, cls: str, raw: str, description: str, url: str, pins: dict[str, str]) -> Dataset:
    return Dataset(
        name,
        description,
        "torchvision",
        files=tuple(DataFile(f"{raw}/raw/{file}", sha256) for file, sha256 in pins.items()),
        managed_by="torchvision",
        note="torchvision downloads it (md5-checked); the 4 uncompressed raw IDX files are pinned here",
        factory=f"torchvision.datasets:{cls}",
        factory_calls=({"train": True}, {"train": False}),
        url=url,
    )


def _build() -> dict[str, Dataset]:
    datasets = [
        Dataset(
            "tinyshakespeare",
            "Tiny Shakespeare: 1,115,394 characters of Shakespeare plays in one text file",
            "tinyshakespeare",
            files=(DataFile("input.txt", "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"),),
            remotes=(
                Remote(
                    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
                    "tinyshakespeare/input.txt",
                    "file",
                    target="input.txt",
                    sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                ),
            ),
            note="one file, downloaded as is and pinned",
        ),
        Dataset(
            "sst2",
            "SST-2 (GLUE) binary sentiment: train.tsv, dev.tsv, test.tsv (unlabelled); optional test_labeled.tsv",
            "sst2",
            files=(
                DataFile("train.tsv", "48eac26399f8456935f81dd9e3a745c1430adb6c62e233ccfe22db4a0d15d1d1"),
                DataFile("dev.tsv", "54a9c12c77e402fc14d6a66a506f24d999f596b0176eb777c972cccc2f9cc4b0"),
                DataFile("test.tsv", "69a938605609b3e6663b4487918fe1565eb293734e6e520d0366d1d412fd2a13"),
                DataFile("test_labeled.tsv", "c0efc56ade6e0598d0f8daca1976e232aee0bcabca8e599341cad290d9d10b3c", True),
            ),
            # GLUE publishes no checksum of the zip (and its mirrors differ), so its members are pinned.
            remotes=(
                Remote(
                    "https://dl.fbaipublicfiles.com/glue/data/SST-2.zip",
                    "sst2/SST-2.zip",
                    "zip",
                    members=(
                        ("SST-2/train.tsv", "train.tsv"),
                        ("SST-2/dev.tsv", "dev.tsv"),
                        ("SST-2/test.tsv", "test.tsv"),
                    ),
                ),
            ),
            note=(
                "test_labeled.tsv (third-party labels of the GLUE test sentences, not in the GLUE zip) is optional: "
                "verified if the folder has it, never downloaded"
            ),
        ),
        _multi30k(),
        _fsdd(),
        _torchvision(
            "mnist",
            "MNIST",
            "MNIST",
            "MNIST handwritten digits, 60,000 train + 10,000 test, 28x28 (torchvision.datasets.MNIST)",
            "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz",
            {
                "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            },
        ),
        _torchvision(
            "fashion_mnist",
            "FashionMNIST",
            "FashionMNIST",
            "Fashion-MNIST article images, 10 classes, 60,000 + 10,000, 28x28 (torchvision.datasets.FashionMNIST)",
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/train-images-idx3-ubyte.gz",
            {
                "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            },
        ),
        Dataset(
            "cifar10",
            "CIFAR-10 32x32 colour images, 10 classes, 50,000 + 10,000 (torchvision.datasets.CIFAR10)",
            "torchvision",
            managed_by="torchvision",
            markers=("cifar-10-batches-py/batches.meta",),
            note="torchvision downloads it and checks its md5; nothing is pinned here",
            factory="torchvision.datasets:CIFAR10",
            factory_calls=({"train": True}, {"train": False}),
            url="https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        ),
        Dataset(
            "speech_commands",
            "Google Speech Commands v0.02, 35 words, 105,829 one-second clips (torchaudio.datasets.SPEECHCOMMANDS)",
            "torchaudio",
            managed_by="torchaudio",
            markers=("SpeechCommands/speech_commands_v0.02/testing_list.txt",),
            note="torchaudio downloads it (2.3 GB, checksum-checked) with folder_in_archive='SpeechCommands'",
            factory="torchaudio.datasets:SPEECHCOMMANDS",
            factory_calls=({"folder_in_archive": "SpeechCommands", "subset": "testing"},),
            url="http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
        ),
    ]
    return {dataset.name: dataset for dataset in datasets}


DATASETS: dict[str, Dataset] = _build()
"""Every known dataset by name (tests may add entries; every function also accepts a Dataset)."""


def get(name: str | Dataset) -> Dataset:
    """The :class:`Dataset` called ``name`` (a :class:`Dataset` is returned as is).

    Raises:
        DataError: No dataset has that name.
    """
    if isinstance(name, Dataset):
        return name
    try:
        return DATASETS[name]
    except KeyError:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}") from None
