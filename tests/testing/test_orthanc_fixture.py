"""The throwaway Orthanc archive the DICOMweb tests run against: it starts in a network
namespace of its own, is reached only through the bridge on the host's 127.0.0.1, keeps its
data across a stop and a start, and enforces its users."""

from __future__ import annotations

import datetime
from pathlib import Path

import httpx
import numpy as np
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from medagent.testing._orthanc import OrthancServer

pytestmark = pytest.mark.slow

USERS = {"reader": "secret"}


def secondary_capture(path: Path) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    data = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    data.SOPClassUID, data.SOPInstanceUID = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
    )
    data.StudyInstanceUID, data.SeriesInstanceUID = generate_uid(), generate_uid()
    data.PatientID, data.Modality = "anon", "OT"
    data.StudyDate = datetime.date.today().strftime("%Y%m%d")
    data.Rows = data.Columns = 16
    data.SamplesPerPixel, data.PhotometricInterpretation = 1, "MONOCHROME2"
    data.BitsAllocated = data.BitsStored = 8
    data.HighBit, data.PixelRepresentation = 7, 0
    data.PixelData = np.arange(256, dtype=np.uint8).tobytes()
    data.save_as(path, enforce_file_format=True)
    return path


@pytest.fixture
def orthanc() -> OrthancServer:
    try:
        server = OrthancServer(users=USERS)
    except Exception as exc:  # ConfigError: not installed
        pytest.fail(f"the Orthanc fixture cannot run here: {exc}")
    return server


def test_orthanc_serves_dicomweb_to_its_users_only(orthanc: OrthancServer, tmp_path: Path) -> None:
    with orthanc:
        orthanc.upload([secondary_capture(tmp_path / "one.dcm")])
        studies = httpx.get(f"{orthanc.dicomweb_url}/studies", auth=("reader", "secret"))
        assert studies.status_code == 200 and len(studies.json()) == 1
        assert httpx.get(f"{orthanc.dicomweb_url}/studies").status_code == 401
        assert httpx.get(f"{orthanc.dicomweb_url}/studies", auth=("reader", "x")).status_code == 401


def test_stopped_archive_refuses_then_comes_back_with_its_data(
    orthanc: OrthancServer, tmp_path: Path
) -> None:
    with orthanc:
        orthanc.upload([secondary_capture(tmp_path / "one.dcm")])
        orthanc.stop()
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"{orthanc.base_url}/system", timeout=2)
        orthanc.start()
        studies = httpx.get(f"{orthanc.dicomweb_url}/studies", auth=("reader", "secret"))
        assert len(studies.json()) == 1
    assert not orthanc.folder.exists()
