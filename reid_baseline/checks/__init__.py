"""Environment checks: can this machine run this config?"""
