"""Raw videos to what training reads: face detection, tracking, aligned crops, 16 kHz wavs.

``crop_faces(video)`` gives the face crops of one video in memory (``hicmae predict`` on raw videos);
``preprocess(inputs, out_dir)`` is ``hicmae preprocess``: a folder or manifest of videos to face-crop mp4s,
wavs, a manifest and a failure log, in parallel, resumable, split over machines with ``part``.
"""

from hicmae._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    "FaceCrops": "faces",
    "FaceSettings": "faces",
    "FaceTrack": "faces",
    "NoFaceError": "faces",
    "crop_faces": "faces",
    "iter_crops": "faces",
    "track_faces": "faces",
    "PreprocessSettings": "run",
    "PreprocessSummary": "run",
    "preprocess": "run",
})
