"""poseless.features"""
