from pathlib import Path

from pydicom.data import get_testdata_file

from tests.peers import Orthanc, echoscu, storescu


def test_orthanc_receives_from_storescu(orthanc: Orthanc, require_dcmtk: None) -> None:
    assert echoscu(orthanc.dicom_port, called_aet=orthanc.aet)
    path = Path(get_testdata_file("US1_UNCI.dcm"))
    storescu([path], orthanc.dicom_port, called_aet=orthanc.aet)
    found = orthanc.wait_for_instances(1, timeout=20)
    assert len(found) == 1
