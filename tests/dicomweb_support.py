"""A DICOM WSI series in a real Orthanc archive, for the DICOMweb tests, and a proxy that
makes the archive slow."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path

import pydicom

from medagent.testing import (
    OrthancServer,
    free_port,
    synthetic_tissue,
    write_dicom_wsi,
    write_pyramid_tiff,
)

__all__ = ["PASSWORD", "USER", "SlowProxy", "make_series", "series_ref"]

USER, PASSWORD = "reader", "s3cret-Pa55"


def make_series(folder: Path, *, tile: int = 256) -> Path:
    """A 3-level 4000 x 3000 lossless DICOM WSI series (0.25 µm/px) in ``folder/series``."""
    source = write_pyramid_tiff(
        folder / "source.tif", synthetic_tissue(4000, 3000, seed=5), mpp=0.25, levels=3
    )
    return write_dicom_wsi(source, folder / "series", tile=tile, lossless=True)


def series_ref(archive: OrthancServer, series: Path) -> str:
    """The ``dicomweb+`` reference of ``series`` once uploaded to ``archive``."""
    header = pydicom.dcmread(series / "level-0.dcm", stop_before_pixels=True)
    return (
        f"dicomweb+{archive.dicomweb_url}/studies/{header.StudyInstanceUID}"
        f"/series/{header.SeriesInstanceUID}"
    )


class SlowProxy:
    """127.0.0.1:``port`` piped to an archive's port, every answer held back ``delay_s`` seconds
    (0 until a test sets it): a slow frame, without touching the archive."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.delay_s = 0.0
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None

    def __enter__(self) -> SlowProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, slow: bool
    ) -> None:
        try:
            while data := await reader.read(65536):
                if slow and self.delay_s:
                    await asyncio.sleep(self.delay_s)
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(RuntimeError):
                writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        await asyncio.gather(
            self._pipe(reader, up_writer, False), self._pipe(up_reader, writer, True)
        )

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", self.port)
        )
        self._ready.set()
        self._loop.run_forever()
