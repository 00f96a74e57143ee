"""poseless.evaluate"""
