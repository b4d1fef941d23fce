"""The offline demo: a fake Messages API and the assets `healbot demo` runs against."""
