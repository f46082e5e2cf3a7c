"""Joint training, bit inheritance, BN calibration, search and finetuning of OQAT supernets."""
