"""The CIFAR-10 loader: official layout, subsets, fingerprints, and a real (local) download with
checksum verification, HTTP range resume and atomic extraction."""
import hashlib
import http.server
import io
import tarfile
import threading
from pathlib import Path

import pytest
import torch

from cmx.run import data as cifar
from cmx.errors import UserError
from tiny_cifar import make_tiny_cifar


def test_loads_the_official_layout_as_uint8_tensors(tiny_data):
    ds = cifar.load_cifar10(tiny_data)
    assert ds.train_x.shape == (320, 3, 32, 32) and ds.train_x.dtype == torch.uint8
    assert ds.test_x.shape == (64, 3, 32, 32) and ds.test_y.dtype == torch.int64
    assert 0 <= int(ds.train_y.min()) and int(ds.train_y.max()) <= 9
    # the folder itself is accepted too
    assert torch.equal(cifar.load_cifar10(tiny_data / "cifar-10-batches-py").test_y, ds.test_y)


def test_pixel_order_matches_the_official_row_major_rgb_planes(tmp_path):
    root = make_tiny_cifar(tmp_path, 4, 4)
    import pickle
    with open(root / "cifar-10-batches-py" / "data_batch_1", "rb") as fh:
        raw = pickle.load(fh)["data"]
    ds = cifar.load_cifar10(root)
    assert ds.train_x[0, 1, 2, 3] == raw[0, 1024 + 2 * 32 + 3]  # channel G, row 2, column 3


def test_fingerprint_separates_subsets_from_the_full_set(tiny_data, tmp_path):
    tag = cifar.dataset_fingerprint(tiny_data)
    assert tag.startswith("cifar10-") and tag == cifar.dataset_fingerprint(tiny_data)
    other = make_tiny_cifar(tmp_path, 32, 64)
    assert cifar.dataset_fingerprint(other) != tag
    assert cifar.dataset_fingerprint(tmp_path / "absent") == "cifar10"  # to be downloaded: the real thing


def test_subset_is_a_loadable_random_draw_with_its_own_fingerprint(tiny_data, tmp_path):
    full = cifar.load_cifar10(tiny_data)
    folder = cifar.write_subset(tiny_data, tmp_path / "a", n_train=101, n_test=7, seed=0)
    a = cifar.load_cifar10(tmp_path / "a")
    assert folder == tmp_path / "a" / "cifar-10-batches-py"
    assert a.train_x.shape == (101, 3, 32, 32) and a.test_x.shape == (7, 3, 32, 32)
    # every subset image is one of the source's, with its own label
    for x, y in zip(a.train_x[:20], a.train_y[:20]):
        [i] = [i for i in range(len(full.train_x)) if torch.equal(full.train_x[i], x)]
        assert full.train_y[i] == y
    cifar.write_subset(tiny_data, tmp_path / "b", n_train=101, n_test=7, seed=1)  # same size, other images
    tags = {cifar.dataset_fingerprint(p) for p in (tiny_data, tmp_path / "a", tmp_path / "b")}
    assert len(tags) == 3
    with pytest.raises(UserError, match="already exists"):
        cifar.write_subset(tiny_data, tmp_path / "a", n_train=10, n_test=7)
    with pytest.raises(UserError, match="--train must be"):
        cifar.write_subset(tiny_data, tmp_path / "c", n_train=10_000, n_test=7)
    assert not (tmp_path / "c").exists() or not any((tmp_path / "c").iterdir())


def test_subset_command_writes_a_folder_and_reports_mistakes_in_one_line(tiny_data, tmp_path, capsys):
    from cmx.cli.app import main

    assert main(["subset", str(tiny_data), str(tmp_path / "s"), "--train", "50", "--test", "10"]) == 0
    assert cifar.load_cifar10(tmp_path / "s", download=False).train_x.shape[0] == 50
    capsys.readouterr()
    for argv, expected in ((["subset", str(tmp_path / "absent"), str(tmp_path / "t")], "missing"),
                           (["subset", str(tiny_data), str(tmp_path / "t"), "--train", "0"], "--train must be"),
                           (["subset", str(tiny_data), str(tmp_path / "s")], "already exists")):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("cmx: error:") and expected in err[0], err
    assert not (tmp_path / "t").exists()


class RangeHandler(http.server.BaseHTTPRequestHandler):
    """Serves one archive, honouring `Range: bytes=N-` like a real web server."""

    blob = b""
    requests = []

    def do_GET(self):
        start = 0
        if self.headers.get("Range"):
            start = int(self.headers["Range"].split("=")[1].rstrip("-"))
        RangeHandler.requests.append(start)
        body = self.blob[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def archive_server(tmp_path):
    src = make_tiny_cifar(tmp_path / "src", 8, 8)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    RangeHandler.blob, RangeHandler.requests = buf.getvalue(), []
    server = http.server.HTTPServer(("127.0.0.1", 0), RangeHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/cifar-10-python.tar.gz", hashlib.md5(buf.getvalue()).hexdigest()
    server.shutdown()


def test_download_verifies_resumes_and_extracts_atomically(archive_server, tmp_path):
    url, md5 = archive_server
    root = tmp_path / "data"
    root.mkdir()
    half = RangeHandler.blob[: len(RangeHandler.blob) // 2]
    (root / "cifar-10-python.tar.gz.part").write_bytes(half)  # an interrupted earlier download
    cifar.download_cifar10(root, url=url, md5=md5)
    assert RangeHandler.requests == [len(half)]  # resumed, not restarted
    assert cifar.load_cifar10(root, download=False).train_x.shape == (40, 3, 32, 32)
    assert not list(root.glob(".extract-*")) and not list(root.glob("*.part"))


def test_download_with_a_bad_checksum_is_refused(archive_server, tmp_path):
    url, _ = archive_server
    with pytest.raises(UserError, match="md5"):
        cifar.download_cifar10(tmp_path / "data", url=url, md5="0" * 32)
    assert not (tmp_path / "data" / "cifar-10-batches-py").exists()


def test_offline_download_is_one_clear_error_and_leaves_nothing(tmp_path):
    target = tmp_path / "new" / "data"
    with pytest.raises(UserError, match=r"cannot download CIFAR-10 .*pass --data DIR"):
        cifar.download_cifar10(target, url="http://127.0.0.1:9/cifar-10-python.tar.gz")
    assert not (tmp_path / "new").exists()
