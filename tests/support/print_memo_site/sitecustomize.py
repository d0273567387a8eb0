"""Run by Python at the start of each process the suite starts with print_memo's
memo_environment: that process prints its PDFs through the session's memo."""

import os
from pathlib import Path

_folder = os.environ.get("BILLING_TEST_PRINT_MEMO_DIR")
if _folder:
    from tests.support.print_memo import PrintMemo

    PrintMemo(Path(_folder)).install_on_import()
