"""poseless.train"""
